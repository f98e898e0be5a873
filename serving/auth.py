"""Authentication: argon2 password hashes, short-lived JWT bearer tokens, API keys,
and a slowdown of repeated failed logins.

Failed logins (documented policy, `LockoutPolicy`):

* per user: after `threshold` consecutive failures the account is locked for
  `base_seconds * 2 ** (failures - threshold)` seconds, capped at `max_seconds`;
  every further failure after the lock doubles it; a success resets the count.
  Unknown usernames are tracked the same way (in `login_throttle`, key
  `user:<name>`), so the answers do not reveal which accounts exist.
* per client IP: the same rule with its own, higher threshold (key `ip:<addr>`),
  which slows down guessing across many usernames.
* while locked, a login (even with the right password) gets 429 with Retry-After.
* counters are of consecutive failures: a success clears the user's and the IP's;
  IP and unknown-name counters idle for a day are deleted.

Secrets are never logged nor returned: passwords are only hashed, API keys are
stored as SHA-256 and shown once at creation, tokens are not logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import re
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from data_contracts.settings import DataLayout
from serving.orm import ApiKey, LoginThrottle, User, utcnow

log = logging.getLogger(__name__)

JWT_ALGORITHM = "HS256"
JWT_ISSUER = "caravan"
API_KEY_PREFIX = "cvn_"
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name
MIN_SECRET_BYTES = 32
MIN_PASSWORD_LENGTH = 12
THROTTLE_RETENTION = dt.timedelta(days=1)
USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")


class Role(StrEnum):
    officer = "officer"
    analyst = "analyst"
    data_scientist = "data_scientist"
    auditor = "auditor"
    admin = "admin"


class AuthError(Exception):
    """Credentials missing, wrong, expired or revoked (HTTP 401)."""


class LockedOutError(Exception):
    """Too many failed logins: try again after `retry_after` seconds (HTTP 429)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


class ServingSettings(BaseSettings):
    """Serving settings from the environment (prefix CARAVAN_)."""

    model_config = SettingsConfigDict(env_prefix="CARAVAN_", extra="ignore")

    secret_key: SecretStr | None = None
    token_ttl_seconds: int = 900
    max_body_bytes: int = 1_048_576
    login_lockout_threshold: int = 5
    login_lockout_base_seconds: float = 1.0
    login_lockout_max_seconds: float = 900.0
    ip_lockout_threshold: int = 20
    auto_migrate: bool = True

    def lockout_policy(self) -> LockoutPolicy:
        return LockoutPolicy(
            threshold=self.login_lockout_threshold,
            ip_threshold=self.ip_lockout_threshold,
            base_seconds=self.login_lockout_base_seconds,
            max_seconds=self.login_lockout_max_seconds,
        )


@dataclass(frozen=True)
class LockoutPolicy:
    threshold: int = 5
    ip_threshold: int = 20
    base_seconds: float = 1.0
    max_seconds: float = 900.0

    def lock_seconds(self, failures: int, threshold: int) -> float:
        """How long to lock after `failures` consecutive failures (0: no lock)."""
        if failures < threshold:
            return 0.0
        return float(min(self.max_seconds, self.base_seconds * 2 ** (failures - threshold)))


# --- passwords -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def password_hasher() -> PasswordHasher:
    return PasswordHasher()


def hash_password(password: str) -> str:
    return password_hasher().hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return password_hasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def check_password_policy(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if username.lower() in password.lower():
        raise ValueError("password must not contain the username")


# --- the signing secret ----------------------------------------------------------------


def load_secret_key(serving: ServingSettings, layout: DataLayout) -> bytes:
    """CARAVAN_SECRET_KEY, else a random per-deployment key kept in <data>/secret_key (0600)."""
    if serving.secret_key is not None:
        key = serving.secret_key.get_secret_value().encode()
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError(f"CARAVAN_SECRET_KEY must have at least {MIN_SECRET_BYTES} bytes")
        return key
    path = layout.root / SECRET_KEY_FILE
    if not path.exists():
        layout.root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another worker made it first
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
            log.info("created a new signing key in %s", path)
    _check_private(path)
    key = path.read_text().strip().encode()
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"{path} holds a key shorter than {MIN_SECRET_BYTES} bytes")
    return key


def _check_private(path: Path) -> None:
    if path.stat().st_mode & 0o077:
        raise PermissionError(f"{path} must be readable by its owner only (chmod 600)")


# --- tokens ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenClaims:
    username: str
    role: Role
    jti: str
    issued_at: dt.datetime
    expires_at: dt.datetime


def create_access_token(
    secret: bytes,
    username: str,
    role: Role | str,
    ttl_seconds: int,
    *,
    now: dt.datetime | None = None,
) -> str:
    issued = now or utcnow()
    claims = {
        "iss": JWT_ISSUER,
        "sub": username,
        "role": str(Role(role)),
        "iat": int(issued.timestamp()),
        "exp": int((issued + dt.timedelta(seconds=ttl_seconds)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def decode_access_token(secret: bytes, token: str) -> TokenClaims:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            issuer=JWT_ISSUER,
            options={"require": ["exp", "iat", "sub", "iss", "jti"]},
        )
        return TokenClaims(
            username=str(claims["sub"]),
            role=Role(claims["role"]),
            jti=str(claims["jti"]),
            issued_at=dt.datetime.fromtimestamp(claims["iat"], dt.UTC),
            expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.UTC),
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except (jwt.InvalidTokenError, KeyError, ValueError) as exc:
        raise AuthError("invalid token") from exc


# --- API keys --------------------------------------------------------------------------


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(
    session: Session,
    *,
    name: str,
    role: Role | str,
    created_by: str,
    office_code: str | None = None,
    expires_at: dt.datetime | None = None,
) -> tuple[ApiKey, str]:
    """Store a new API key (hashed) and return it with the plain key, to show once."""
    role = Role(role)
    if role is Role.officer and not office_code:
        raise ValueError("an officer key needs an office_code")
    key = generate_api_key()
    row = ApiKey(
        key_hash=hash_api_key(key),
        prefix=key[: len(API_KEY_PREFIX) + 6],
        name=name,
        role=str(role),
        office_code=office_code,
        created_by=created_by,
        expires_at=expires_at,
        revoked=False,
    )
    session.add(row)
    session.flush()
    log.info("API key %s (%s) created by %s for role %s", row.id, row.prefix, created_by, role)
    return row, key


def authenticate_api_key(session: Session, key: str) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key)))
    if row is None or not hmac.compare_digest(row.key_hash, hash_api_key(key)):
        raise AuthError("invalid API key")
    if row.revoked:
        raise AuthError("API key revoked")
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise AuthError("API key expired")
    row.last_used_at = utcnow()
    return row


def revoke_api_key(session: Session, key_id: int) -> ApiKey | None:
    row = session.get(ApiKey, key_id)
    if row is not None and not row.revoked:
        row.revoked = True
        row.revoked_at = utcnow()
    return row


# --- users -----------------------------------------------------------------------------


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    role: Role | str,
    display_name: str | None = None,
    office_code: str | None = None,
) -> User:
    """Add a user (the caller commits). Officers belong to an office."""
    role = Role(role)
    if not USERNAME_PATTERN.fullmatch(username):
        raise ValueError("username: 2-64 of a-z 0-9 . _ -, starting with a letter or digit")
    if role is Role.officer and not office_code:
        raise ValueError("an officer needs an office_code")
    check_password_policy(password, username)
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ValueError(f"user {username!r} exists")
    user = User(
        username=username,
        display_name=display_name or username,
        role=str(role),
        office_code=office_code,
        password_hash=hash_password(password),
        active=True,
        failed_logins=0,
    )
    session.add(user)
    session.flush()
    log.info("user %s created with role %s", username, role)
    return user


def set_password(session: Session, user: User, password: str) -> None:
    check_password_policy(password, user.username)
    user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None


# --- login with slowdown ---------------------------------------------------------------


def _retry_after(locked_until: dt.datetime | None, now: dt.datetime) -> float:
    if locked_until is None or locked_until <= now:
        return 0.0
    return (locked_until - now).total_seconds()


def _throttle_row(session: Session, key: str) -> LoginThrottle | None:
    return session.get(LoginThrottle, key)


def _throttle_fail(
    session: Session, key: str, threshold: int, policy: LockoutPolicy, now: dt.datetime
) -> None:
    row = _throttle_row(session, key)
    if row is None:
        # The table grows only here: drop counters idle for a day and no longer locking.
        stale = now - THROTTLE_RETENTION
        session.execute(
            delete(LoginThrottle).where(
                LoginThrottle.last_failure_at < stale,
                or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
            )
        )
        row = LoginThrottle(key=key, failures=0, last_failure_at=now)
        session.add(row)
    row.failures += 1
    row.last_failure_at = now
    seconds = policy.lock_seconds(row.failures, threshold)
    if seconds:
        row.locked_until = now + dt.timedelta(seconds=seconds)


def authenticate_password(
    session: Session,
    username: str,
    password: str,
    *,
    client_ip: str | None,
    policy: LockoutPolicy,
    now: dt.datetime | None = None,
) -> User:
    """Check a login; count failures and lock per user and per client IP.

    Raises LockedOutError (before checking the password) while locked, AuthError on a
    wrong username or password. The caller commits in both the success and the
    AuthError case so the counters persist.
    """
    now = now or utcnow()
    # No real username holds control characters; keep them out of SQL (PostgreSQL refuses NUL).
    username = "".join(c if c.isprintable() else "\ufffd" for c in username)[:150]
    ip_key = f"ip:{client_ip}" if client_ip else None
    ip_row = _throttle_row(session, ip_key) if ip_key else None
    user = session.scalar(select(User).where(User.username == username))
    user_row = None if user is not None else _throttle_row(session, f"user:{username}")
    user_locked_until = (
        user.locked_until if user is not None else (user_row.locked_until if user_row else None)
    )
    wait = max(
        _retry_after(user_locked_until, now),
        _retry_after(ip_row.locked_until if ip_row else None, now),
    )
    if wait > 0:
        log.warning("login refused while locked: user=%s ip=%s", username, client_ip)
        raise LockedOutError(wait)

    if user is None:
        verify_password(_dummy_hash(), password)  # same work as for a real user
        ok = False
    else:
        ok = verify_password(user.password_hash, password) and user.active
    if ok and user is not None:
        user.failed_logins = 0
        user.locked_until = None
        user.last_login_at = now
        if password_hasher().check_needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        if ip_row is not None:
            ip_row.failures = 0
            ip_row.locked_until = None
        log.info("login ok: user=%s ip=%s", username, client_ip)
        return user

    if user is not None:
        user.failed_logins += 1
        seconds = policy.lock_seconds(user.failed_logins, policy.threshold)
        if seconds:
            user.locked_until = now + dt.timedelta(seconds=seconds)
    else:
        _throttle_fail(session, f"user:{username}", policy.threshold, policy, now)
    if ip_key:
        _throttle_fail(session, ip_key, policy.ip_threshold, policy, now)
    log.warning("login failed: user=%s ip=%s", username, client_ip)
    raise AuthError("wrong username or password")


# --- request principals ----------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (bearer token) or an API key."""

    username: str
    role: Role
    office_code: str | None
    display_name: str
    auth_method: str  # "token" | "api_key"
    api_key_id: int | None = None


def principal_from_token(session: Session, secret: bytes, token: str) -> Principal:
    claims = decode_access_token(secret, token)
    user = session.scalar(select(User).where(User.username == claims.username))
    if user is None or not user.active:
        raise AuthError("unknown or inactive user")
    return Principal(
        username=user.username,
        role=Role(user.role),
        office_code=user.office_code,
        display_name=user.display_name,
        auth_method="token",
    )


def principal_from_api_key(session: Session, key: str) -> Principal:
    row = authenticate_api_key(session, key)
    return Principal(
        username=f"apikey:{row.name}",
        role=Role(row.role),
        office_code=row.office_code,
        display_name=row.name,
        auth_method="api_key",
        api_key_id=row.id,
    )

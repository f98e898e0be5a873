"""Authentication: argon2 password hashes, short-lived JWT bearer tokens, API keys,
and a slowdown of repeated failed logins.

Failed logins (documented policy, `LockoutPolicy`). Guessing is slowed down, but
failures from other addresses never keep a user's right password out:

* per user name and client address (`login_throttle` key `pair:<name>|<addr>`):
  after `threshold` consecutive failures that name is locked *from that address*
  for `base_seconds * 2 ** (failures - threshold)` seconds, capped at `max_seconds`;
  every further failure doubles it; a success resets the count. Failures from other
  addresses do not lock the user out.
* per user name over all addresses (the user's `failed_logins`; for a name that is
  no user, key `user:#<digest>`): from `user_threshold` consecutive failures on, an
  address that fails for the name waits before its next try for it (the same
  growth, capped at `user_max_seconds`: a slow-down of seconds, not a lock). The
  wait is fixed when that address fails, so nobody else's failures lengthen it; an
  address that has not failed for the name, or one the user has signed in from,
  is not held back. This spreads a guesser's addresses out (one try each, then a
  wait). The user's `locked_until` shows the latest lock put on the name at some
  address (admins see it; an unlock clears them all).
* per client address (key `ip:<addr>`): the same rule with its own, higher
  threshold, which slows down an address trying many names; it does not hold back
  a user at an address they have signed in from (within `TRUSTED_ADDRESS`), so that
  one guesser behind a NAT or proxy cannot lock out everyone behind it (a wrong
  password for such a name is answered as locked, as for any name there, so the
  answers do not tell who signs in from that address).
* while locked, a login (even with the right password) gets 429 with Retry-After.
* a success clears the pair's, the user's and the address's counters; an admin's
  unlock (or a password reset) clears the user's and all their pairs' counters.
* unknown user names are tracked the same way, by a digest (the answers do not
  reveal which accounts exist); rows idle for a day (and not marking an address a
  user signed in from) are deleted.
* the client address is the one uvicorn reports: behind a reverse proxy, uvicorn
  takes it from X-Forwarded-For only for the proxy addresses listed in
  `FORWARDED_ALLOW_IPS` / `--forwarded-allow-ips` (default 127.0.0.1); otherwise
  every client appears as the proxy's address (README, Failed logins).

Secrets are never logged nor returned: passwords are only hashed, API keys are
stored as SHA-256 and shown once at creation, tokens are not logged.

Sign-out is server-side: `end_sessions` sets the user's `sessions_valid_after`, and
every bearer token (API or web session cookie) issued before it is refused, so a copied
token stops working and cannot be renewed. Disabling a user and resetting a password
end the user's sessions too.

Account administration is audited in the same transaction as the change (the caller
commits): user creation and changes, password resets, API-key creation and revocation
(with the acting admin), successful logins and lockouts. An API key acts as
`apikey:<id>:<name>`, and two active keys may not share a name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import cast

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import ColumnElement, Table, bindparam, delete, func, or_, select
from sqlalchemy.orm import Session

from data_contracts.settings import DataLayout
from serving.db import write_lock
from serving.orm import ApiKey, LoginThrottle, User, utcnow

log = logging.getLogger(__name__)

JWT_ALGORITHM = "HS256"
JWT_ISSUER = "caravan"
API_KEY_PREFIX = "cvn_"
SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name
MIN_SECRET_BYTES = 32
MIN_PASSWORD_LENGTH = 12
THROTTLE_RETENTION = dt.timedelta(days=1)
# A user who signed in from an address within this time is not held back there by the
# per-address lock (many names failing from that address, e.g. behind a NAT).
TRUSTED_ADDRESS = dt.timedelta(days=90)
USERNAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")


class Role(StrEnum):
    officer = "officer"
    analyst = "analyst"
    data_scientist = "data_scientist"
    auditor = "auditor"
    admin = "admin"


class AuthError(Exception):
    """Credentials missing, wrong, expired or revoked (HTTP 401)."""


class InvalidFieldError(ValueError):
    """An account change refused because of one field (HTTP 422 naming `field`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class AccountConflictError(ValueError):
    """An account change that conflicts with the stored state (HTTP 409)."""


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
    # Per-path exceptions to `max_body_bytes` (exact request path -> bytes), for the
    # routes that take whole files: the UN SC list XML is 1.6 MB and growing.
    # CARAVAN_MAX_BODY_BYTES_BY_PATH='{"/api/v1/watchlists/un": 67108864, ...}' (JSON;
    # replaces this mapping whole).
    max_body_bytes_by_path: dict[str, int] = {
        "/api/v1/watchlists/un": 64 * 1024 * 1024,
        "/api/v1/watchlists/national": 64 * 1024 * 1024,
        # a batch of 1000 records (serving.schemas.MAX_BATCH): real declarations with
        # their goods lines average ~2 KB, so 1 MiB would stop a batch at ~500
        "/api/v1/shipments/batch": 8 * 1024 * 1024,
        "/api/v1/travellers/batch": 8 * 1024 * 1024,
    }
    login_lockout_threshold: int = 5
    login_lockout_base_seconds: float = 1.0
    login_lockout_max_seconds: float = 900.0
    ip_lockout_threshold: int = 20
    user_lockout_threshold: int = 10
    user_lockout_max_seconds: float = 60.0
    auto_migrate: bool = True
    # Move the serving state out of the garbage collector's full passes once built
    # (serving.app.HeapFreezer): no pause of half a second now and then.
    gc_freeze: bool = True

    def lockout_policy(self) -> LockoutPolicy:
        return LockoutPolicy(
            threshold=self.login_lockout_threshold,
            ip_threshold=self.ip_lockout_threshold,
            user_threshold=self.user_lockout_threshold,
            user_max_seconds=self.user_lockout_max_seconds,
            base_seconds=self.login_lockout_base_seconds,
            max_seconds=self.login_lockout_max_seconds,
        )


@dataclass(frozen=True)
class LockoutPolicy:
    """`threshold`: per user name and address; `ip_threshold`: per address (many
    names); `user_threshold`: per user name over all addresses (module docstring)."""

    threshold: int = 5
    ip_threshold: int = 20
    user_threshold: int = 10
    base_seconds: float = 1.0
    max_seconds: float = 900.0
    user_max_seconds: float = 60.0

    def hold_seconds(self, failures: int) -> float:
        """How long an address waits after failing for a name that has failed
        `failures` times in a row over all addresses (0: no wait): the same growth,
        capped at `user_max_seconds`, a slow-down rather than a lock."""
        return min(self.user_max_seconds, self.lock_seconds(failures, self.user_threshold))

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


# Words that make up the commonest passwords (lists of breached passwords, e.g.
# NCSC's top 100,000): a password that is one of them, repeated or with digits and
# signs around it, is guessed first (NIST SP 800-63B 5.1.1.2 asks to refuse them).
COMMON_PASSWORD_WORDS = frozenset(
    {
        "password", "passw0rd", "qwerty", "qwertyuiop", "letmein", "welcome", "admin",
        "administrator", "iloveyou", "monkey", "dragon", "football", "baseball", "master",
        "sunshine", "princess", "superman", "trustno1", "abc", "abcdef", "asdfgh",
        "zxcvbn", "1q2w3e", "caravan", "customs", "officer", "parol", "parol123",
        "changeme", "secret", "default", "user", "login", "test",
    }
)  # fmt: skip


def check_password_policy(password: str, username: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if username.lower() in password.lower():
        raise ValueError("password must not contain the username")
    low = password.lower()
    if len(set(low)) < 4 or any(
        len(low) % n == 0 and low == low[:n] * (len(low) // n) for n in range(1, len(low) // 2 + 1)
    ):
        raise ValueError("password must not be one character or one block repeated")
    core = re.sub(r"^[\d\W_]+|[\d\W_]+$", "", low)
    if (
        low.isdigit()
        or core in COMMON_PASSWORD_WORDS
        or any(core == w * (len(core) // len(w)) for w in COMMON_PASSWORD_WORDS if core)
    ):
        raise ValueError(
            "password is one of the commonest passwords (or one repeated, or with digits "
            "around it): choose another"
        )


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
        # to the microsecond (RFC 7519 allows fractions): a sign-out refuses the tokens
        # issued before it, and a login a moment later must not be refused with them
        "iat": round(issued.timestamp(), 6),
        "exp": round((issued + dt.timedelta(seconds=ttl_seconds)).timestamp(), 6),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def decode_access_token(secret: bytes, token: str, *, verify_exp: bool = True) -> TokenClaims:
    """The claims of a token this server signed (AuthError otherwise). `verify_exp`
    False reads an expired one too (to say when a session ended)."""
    return _decoded(secret, token, verify_exp)[0]


# Tokens whose signature and claims were verified: (secret, token) -> (claims, the
# integer `exp` PyJWT compares with the time). A token checked again is not verified
# again: only its expiry can change its answer (PyJWT's test, repeated in
# `verified_token`); the user row is still read on every request.
_VERIFIED: dict[tuple[bytes, str], tuple[TokenClaims, int]] = {}
_VERIFIED_MAX = 4096


def verified_token(secret: bytes, token: str) -> TokenClaims:
    """As `decode_access_token` (expiry verified), without checking the signature of a
    token seen before again."""
    key = (secret, token)
    known = _VERIFIED.get(key)
    if known is None:
        known = _decoded(secret, token, True)
        if len(_VERIFIED) >= _VERIFIED_MAX:
            _VERIFIED.clear()
        _VERIFIED[key] = known
    elif known[1] <= time.time():  # (PyJWT: expired when int(exp) <= now)
        _VERIFIED.pop(key, None)
        raise AuthError("token expired")
    return known[0]


def _decoded(secret: bytes, token: str, verify_exp: bool) -> tuple[TokenClaims, int]:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            issuer=JWT_ISSUER,
            options={"require": ["exp", "iat", "sub", "iss", "jti"], "verify_exp": verify_exp},
        )
        return TokenClaims(
            username=str(claims["sub"]),
            role=Role(claims["role"]),
            jti=str(claims["jti"]),
            issued_at=dt.datetime.fromtimestamp(float(claims["iat"]), dt.UTC),
            expires_at=dt.datetime.fromtimestamp(float(claims["exp"]), dt.UTC),
        ), int(claims["exp"])
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token expired") from exc
    except (jwt.InvalidTokenError, KeyError, ValueError, TypeError, OverflowError) as exc:
        raise AuthError("invalid token") from exc


# --- the audit trail of account administration ----------------------------------------


def _audit(
    session: Session, kind: str, actor: str, payload: dict[str, object], entity: str, entity_id: str
) -> None:
    from serving.services import audit  # late: services is the heavier module

    audit(session, kind, actor, dict(payload), entity=entity, entity_id=entity_id)


# --- API keys --------------------------------------------------------------------------


def generate_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_actor(key_id: int, name: str) -> str:
    """How an API key is named in the record (audit actor, decisions, views): its id
    makes it unique; cut to the 64 characters the actor columns hold."""
    return f"apikey:{key_id}:{name}"[:64]


def _active_keys(now: dt.datetime) -> list[ColumnElement[bool]]:
    return [
        ApiKey.revoked.is_(False),
        or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now),
    ]


def create_api_key(
    session: Session,
    *,
    name: str,
    role: Role | str,
    created_by: str,
    office_code: str | None = None,
    expires_at: dt.datetime | None = None,
) -> tuple[ApiKey, str]:
    """Store a new API key (hashed), audited; return it with the plain key, to show once.
    The caller commits. Raises AccountConflictError when an active key has the name."""
    role = Role(role)
    if role is Role.officer and not office_code:
        raise InvalidFieldError("office_code", "an officer key needs an office_code")
    now = utcnow()
    ends = None if expires_at is None else expires_at.replace(tzinfo=expires_at.tzinfo or dt.UTC)
    if ends is not None and ends <= now:
        raise InvalidFieldError(
            "expires_at",
            f"{ends.isoformat()} has passed: a key that expired at its creation is no "
            "key (leave expires_at out for a key that does not expire)",
        )
    write_lock(session, "audit_log")  # one name check at a time
    clash = session.scalar(select(ApiKey.id).where(ApiKey.name == name, *_active_keys(now)))
    if clash is not None:
        raise AccountConflictError(
            f"an active API key is already named {name!r} (id {clash}): choose another name "
            "or revoke that key"
        )
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
    _audit(
        session,
        "api_key_create",
        created_by,
        {
            "api_key_id": row.id,
            "name": name,
            "prefix": row.prefix,
            "role": str(role),
            "office_code": office_code,
            "expires_at": expires_at,
            "acts_as": api_key_actor(row.id, name),
        },
        "api_key",
        str(row.id),
    )
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


def revoke_api_key(session: Session, key_id: int, actor: str = "system") -> ApiKey | None:
    """Revoke a key (audited; the caller commits). None when there is no such key."""
    row = session.get(ApiKey, key_id)
    if row is not None and not row.revoked:
        row.revoked = True
        row.revoked_at = utcnow()
        _audit(
            session,
            "api_key_revoke",
            actor,
            {"api_key_id": row.id, "name": row.name, "prefix": row.prefix, "role": row.role},
            "api_key",
            str(row.id),
        )
        log.info("API key %s (%s) revoked by %s", row.id, row.prefix, actor)
    return row


# --- users -----------------------------------------------------------------------------


def known_offices(
    session: Session, configured: Iterable[str] = (), validated: Path | None = None
) -> set[str]:
    """The offices the deployment knows: configured ones (office capacities), those of
    stored shipments, and those of the validated history (`validated/shipments.parquet`)."""
    from serving.orm import Shipment

    offices = set(configured)
    offices.update(session.scalars(select(Shipment.office_code).distinct()))
    path = validated / "shipments.parquet" if validated is not None else None
    if path is not None and path.exists():
        import polars as pl

        frame = pl.scan_parquet(path).select("office_code").unique().collect()
        offices.update(str(v) for v in frame["office_code"].drop_nulls().to_list())
    return offices


def check_office(office_code: str | None, known: set[str]) -> None:
    """Refuse an office the deployment does not know (InvalidFieldError on office_code).
    A deployment that knows no office yet (no history, no shipment, no capacity
    setting) has nothing to check against but the declarations' form of an office
    code (`kz-khorgos` would never match its queue: offices are compared exactly)."""
    if office_code is not None and not known:
        from data_contracts.schemas import SHIPMENTS

        pattern = SHIPMENTS.column("office_code").pattern or ""
        if re.fullmatch(pattern, office_code) is None:
            raise InvalidFieldError(
                "office_code",
                f"{office_code!r} is not an office code as declarations give them "
                f"({pattern}: capital letters, e.g. KZ-KHORGOS); no office is known yet to "
                "check it against (CARAVAN_OFFICE_CAPACITIES makes offices known before "
                "the first shipments)",
            )
    if office_code is not None and known and office_code not in known:
        near = sorted(o for o in known if o[:2] == office_code[:2])[:10]
        hint = f"; known offices of {office_code[:2]}: {', '.join(near)}" if near else ""
        raise InvalidFieldError(
            "office_code",
            f"unknown office {office_code!r}: no shipment or capacity setting names it{hint}",
        )


def create_user(
    session: Session,
    *,
    username: str,
    password: str,
    role: Role | str,
    display_name: str | None = None,
    office_code: str | None = None,
    actor: str = "system",
) -> User:
    """Add a user, audited with `actor` (the caller commits). Officers belong to an office."""
    role = Role(role)
    if not USERNAME_PATTERN.fullmatch(username):
        raise InvalidFieldError(
            "username", "username: 2-64 of a-z 0-9 . _ -, starting with a letter or digit"
        )
    if role is Role.officer and not office_code:
        raise InvalidFieldError("office_code", "an officer needs an office_code")
    try:
        check_password_policy(password, username)
    except ValueError as exc:
        raise InvalidFieldError("password", str(exc)) from None
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise AccountConflictError(f"user {username!r} exists")
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
    _audit(
        session,
        "user_create",
        actor,
        {
            "username": username,
            "display_name": user.display_name,
            "role": str(role),
            "office_code": office_code,
        },
        "user",
        username,
    )
    log.info("user %s created with role %s by %s", username, role, actor)
    return user


def end_sessions(user: User, at: dt.datetime | None = None) -> None:
    """Refuse from now on every token the user was issued before `at` (default now)."""
    user.sessions_valid_after = at or utcnow()


def sign_out(session: Session, username: str) -> None:
    """Server-side sign-out: the user's tokens issued until now stop working (the
    caller commits)."""
    user = session.scalar(select(User).where(User.username == username))
    if user is not None:
        end_sessions(user)
        _audit(session, "logout", username, {"username": username}, "user", username)


def set_password(session: Session, user: User, password: str, *, actor: str = "system") -> None:
    """Set a new password (audited, never the password), unlock the account and end its
    sessions. Raises InvalidFieldError (password) when the policy refuses it."""
    try:
        check_password_policy(password, user.username)
    except ValueError as exc:
        raise InvalidFieldError("password", str(exc)) from None
    user.password_hash = hash_password(password)
    _clear_login_failures(session, user)
    end_sessions(user)
    _audit(
        session, "user_password_reset", actor, {"username": user.username}, "user", user.username
    )


UNCHANGED: object = object()


def _active_admins(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(User)
            .where(User.role == str(Role.admin), User.active.is_(True))
        )
        or 0
    )


def update_user(
    session: Session,
    user: User,
    *,
    actor: str,
    display_name: str | None = None,
    role: Role | str | None = None,
    office_code: str | object | None = UNCHANGED,
    active: bool | None = None,
    unlock: bool = False,
    via: str = "api",
) -> dict[str, list[object]]:
    """Change a user (what is given), audited with `actor`; the caller commits.

    Disabling ends the user's sessions (its tokens are refused at once, and stay
    refused if the user is enabled again); unlocking clears the failed-login lock.
    Refuses (AccountConflictError) a change that leaves no active admin, and
    (InvalidFieldError) an officer without an office. Returns the changes as
    {field: [before, after]}."""
    write_lock(session, "audit_log")  # one admin change at a time (the last-admin check)
    changes: dict[str, list[object]] = {}
    new_role = Role(role) if role is not None else Role(user.role)
    new_office = user.office_code if office_code is UNCHANGED else office_code
    if new_role is Role.officer and not new_office:
        raise InvalidFieldError("office_code", "an officer needs an office_code")
    if display_name is not None and display_name != user.display_name:
        changes["display_name"] = [user.display_name, display_name]
        user.display_name = display_name
    if new_role != Role(user.role):
        changes["role"] = [user.role, str(new_role)]
        user.role = str(new_role)
    if new_office != user.office_code:
        changes["office_code"] = [user.office_code, new_office]
        user.office_code = new_office if isinstance(new_office, str) else None
    if active is not None and active != user.active:
        changes["active"] = [user.active, active]
        user.active = active
        if not active:
            end_sessions(user)
    if unlock:
        locked_until = user.locked_until
        if _clear_login_failures(session, user):  # over all addresses and per address
            changes["locked_until"] = [locked_until, None]
    if not changes:
        return changes
    session.flush()
    moved = "office_code" in changes or "role" in changes or changes.get("active") == [True, False]
    if moved:
        _release_claims(session, user, actor, changes)
    if _active_admins(session) == 0:
        raise AccountConflictError(
            f"this change would leave no active admin: {user.username!r} is the last one"
        )
    _audit(
        session,
        "user_change",
        actor,
        {"username": user.username, "changes": changes, "via": via},
        "user",
        user.username,
    )
    log.info("user %s changed by %s: %s", user.username, actor, sorted(changes))
    return changes


def _release_claims(
    session: Session, user: User, actor: str, changes: dict[str, list[object]]
) -> None:
    """Hand back the referrals `user` holds claimed in offices they no longer decide
    for (moved to another office, no longer an officer, or disabled): a post's
    capacity must not shrink by a transferred officer's claims. Each release is in
    the shipment's audit trail, naming the account change that caused it."""
    from serving.orm import Referral
    from serving.services import _audit_decision

    still_office = user.office_code if user.active and Role(user.role) is Role.officer else None
    held = session.scalars(
        select(Referral).where(Referral.claimed_by == user.username, Referral.status == "claimed")
    ).all()
    for ref in held:
        if ref.office_code == still_office:
            continue
        since = ref.claimed_at
        ref.status, ref.claimed_by, ref.claimed_at = "open", None, None
        _audit_decision(
            session,
            actor,
            ref,
            "release",
            claimed_by=user.username,
            claimed_at=since,
            released_for_another=True,
            because={"user_change": sorted(changes)},
        )
    session.flush()


# --- login with slowdown ---------------------------------------------------------------


def _retry_after(locked_until: dt.datetime | None, now: dt.datetime) -> float:
    if locked_until is None or locked_until <= now:
        return 0.0
    return (locked_until - now).total_seconds()


def _throttle_row(session: Session, key: str) -> LoginThrottle | None:
    return session.get(LoginThrottle, key)


def _address(client_ip: str | None) -> str:
    """The client address as kept in throttle keys (a long one by its digest)."""
    if client_ip is None:
        return "-"
    if len(client_ip) > 64 or not client_ip.isprintable():
        return "#" + hashlib.sha256(client_ip.encode()).hexdigest()[:32]
    return client_ip


def _pair_prefix(name_key: str) -> str:
    return f"pair:{name_key}|"


def _throttle_fail(
    session: Session, key: str, threshold: int, policy: LockoutPolicy, now: dt.datetime
) -> LoginThrottle:
    row = _throttle_row(session, key)
    if row is None:
        # The table grows only here: drop counters idle for a day and no longer
        # locking, unless they mark an address a user signed in from recently.
        stale = now - THROTTLE_RETENTION
        session.execute(
            delete(LoginThrottle).where(
                LoginThrottle.last_failure_at < stale,
                or_(LoginThrottle.locked_until.is_(None), LoginThrottle.locked_until < now),
                or_(
                    LoginThrottle.last_success_at.is_(None),
                    LoginThrottle.last_success_at < now - TRUSTED_ADDRESS,
                ),
            )
        )
        row = LoginThrottle(key=key, failures=0, last_failure_at=now)
        session.add(row)
    row.failures += 1
    row.last_failure_at = now
    seconds = policy.lock_seconds(row.failures, threshold)
    if seconds:
        row.locked_until = now + dt.timedelta(seconds=seconds)
    return row


def _clear_login_failures(session: Session, user: User) -> bool:
    """Clear the user's failed-login counters, over all addresses and per address
    (the marks of addresses they signed in from stay). True if there was any."""
    pairs = session.scalars(
        select(LoginThrottle).where(
            LoginThrottle.key.startswith(_pair_prefix(user.username), autoescape=True),
            LoginThrottle.failures > 0,
        )
    ).all()
    had = bool(user.failed_logins or user.locked_until is not None or pairs)
    user.failed_logins = 0
    user.locked_until = None
    for row in pairs:
        row.failures = 0
        row.locked_until = None
    return had


def authenticate_password(
    session: Session,
    username: str,
    password: str,
    *,
    client_ip: str | None,
    policy: LockoutPolicy,
    now: dt.datetime | None = None,
) -> User:
    """Check a login; count failures per user name and address, per user name over
    all addresses, and per address, and hold back as the module docstring says.

    Raises LockedOutError (before checking the password) while held back, AuthError
    on a wrong username or password. The caller commits in both the success and the
    AuthError case so the counters persist. (At an address locked for many names, a
    name that signed in from it has its password checked; a wrong one is committed
    here and answered with LockedOutError, as for any other name there.)
    """
    now = now or utcnow()
    # No real username holds control characters; keep them out of SQL (PostgreSQL refuses NUL).
    username = "".join(c if c.isprintable() else "\ufffd" for c in username)[:150]
    address = _address(client_ip)
    ip_key = f"ip:{address}" if client_ip else None
    ip_row = _throttle_row(session, ip_key) if ip_key else None
    user = session.scalar(select(User).where(User.username == username))
    # A name that is no user may be a password typed into the wrong field: it is
    # neither logged nor stored as typed (its throttle rows are keyed by a digest).
    shown = username if user is not None else f"<unknown, {len(username)} characters>"
    name_key = (
        username if user is not None else "#" + hashlib.sha256(username.encode()).hexdigest()[:32]
    )
    unknown_key = f"user:{name_key}"
    pair_key = _pair_prefix(name_key) + address
    pair = _throttle_row(session, pair_key)
    trusted = (
        pair is not None
        and pair.last_success_at is not None
        and pair.last_success_at > now - TRUSTED_ADDRESS
    )
    # this name from this address (its own lock, or the hold its last failure got
    # while the name was failing from many addresses)
    wait = _retry_after(pair.locked_until if pair else None, now)
    # this address over all names, except for a user at an address of theirs
    address_wait = _retry_after(ip_row.locked_until if ip_row else None, now)
    if not trusted:
        wait = max(wait, address_wait)
    if wait > 0:
        log.warning("login refused while locked: user=%s ip=%s", shown, client_ip)
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
        if pair is None:
            pair = LoginThrottle(key=pair_key, failures=0, last_failure_at=now)
            session.add(pair)
        pair.failures = 0
        pair.locked_until = None
        pair.last_success_at = now
        if ip_row is not None:
            ip_row.failures = 0
            ip_row.locked_until = None
        _audit(session, "login", username, {"client_ip": client_ip}, "user", username)
        log.info("login ok: user=%s ip=%s", username, client_ip)
        return user

    pair = _throttle_fail(session, pair_key, policy.threshold, policy, now)
    if user is not None:
        user.failed_logins += 1
        all_failures = user.failed_logins
    else:
        all_failures = _throttle_fail(
            session, unknown_key, policy.user_threshold, policy, now
        ).failures
    # Failing for a name that fails from many addresses: this address waits before
    # its next try for that name (not an address the user signed in from). The wait
    # is fixed now, from this address's own failure: nobody else can lengthen it.
    seconds = policy.hold_seconds(all_failures)
    if seconds and not trusted:
        until = now + dt.timedelta(seconds=seconds)
        if pair.locked_until is None or pair.locked_until < until:
            pair.locked_until = until
    if user is not None and pair.locked_until is not None and pair.locked_until > now:
        # The user's locked_until (shown to admins): the latest lock failed logins put
        # on the name at some address; the other addresses are not locked by it.
        if user.locked_until is None or user.locked_until < pair.locked_until:
            user.locked_until = pair.locked_until
        _audit(
            session,
            "login_lockout",
            username,
            {
                "client_ip": client_ip,
                # this address: its failures for the name and its lock
                "failures": pair.failures,
                "locked_until": pair.locked_until,
                # all addresses (from `user_threshold` on, a failing address waits)
                "failures_all_addresses": user.failed_logins,
            },
            "user",
            username,
        )
    if ip_key:
        _throttle_fail(session, ip_key, policy.ip_threshold, policy, now)
    log.warning("login failed: user=%s ip=%s", shown, client_ip)
    if address_wait > 0:
        # A wrong password for a name that signed in from this locked address gets the
        # same answer as any other name there, so that nobody sharing the address learns
        # which names sign in from it; the failure is kept (the caller rolls back on
        # LockedOutError).
        session.commit()
        raise LockedOutError(address_wait)
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
    """The user a token names, read from the database on every request (a disabled
    user, a changed role or office, a sign-out act at once)."""
    claims = verified_token(secret, token)
    user = session.execute(_TOKEN_USER, {"username": claims.username}).first()
    if user is None or not user.active:
        raise AuthError("unknown or inactive user")
    if user.sessions_valid_after is not None and claims.issued_at < user.sessions_valid_after:
        raise AuthError("session ended: sign in again")
    return Principal(
        username=user.username,
        role=Role(user.role),
        office_code=user.office_code,
        display_name=user.display_name,
        auth_method="token",
    )


# (the columns a principal needs, as a Core query of the table built once: loading the
# whole User entity through the ORM cost several times more, on every request)
_USERS = cast(Table, User.__table__)
_TOKEN_USER = select(
    _USERS.c.username,
    _USERS.c.role,
    _USERS.c.office_code,
    _USERS.c.display_name,
    _USERS.c.active,
    _USERS.c.sessions_valid_after,
).where(_USERS.c.username == bindparam("username"))


def principal_from_api_key(session: Session, key: str) -> Principal:
    row = authenticate_api_key(session, key)
    return Principal(
        username=api_key_actor(row.id, row.name),
        role=Role(row.role),
        office_code=row.office_code,
        display_name=row.name,
        auth_method="api_key",
        api_key_id=row.id,
    )

"""Users and API keys (admin only; audited).

Creating and changing users and creating API keys need a signed-in admin (a bearer
token from a login), not an API key: a key cannot mint accounts or keys. Officers and
officer keys must name an office the deployment knows (422 on `office_code`).
"""

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr, computed_field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from serving.auth import (
    MIN_PASSWORD_LENGTH,
    UNCHANGED,
    AccountConflictError,
    InvalidFieldError,
    Principal,
    Role,
    check_office,
    create_api_key,
    create_user,
    known_offices,
    revoke_api_key,
    set_password,
    update_user,
)
from serving.deps import AdminUser, SessionDep
from serving.orm import ApiKey, User
from serving.routers import PROTECTED, ErrorOut, Responses, unprocessable

router = APIRouter(prefix="/api/v1/users", tags=["users"], responses=PROTECTED)

USERNAME = r"^[a-z0-9][a-z0-9._-]{1,63}$"
MAX_INT32 = 2**31 - 1
TEXT = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL)
OFFICE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class UserCreate(_Strict):
    username: str = Field(pattern=USERNAME)
    display_name: str = Field(min_length=1, max_length=128, pattern=TEXT)
    role: Annotated[Role, Field(strict=False)]
    office_code: str | None = Field(default=None, pattern=OFFICE)
    password: SecretStr = Field(
        min_length=MIN_PASSWORD_LENGTH,
        max_length=1024,
        description=f"At least {MIN_PASSWORD_LENGTH} characters, not containing the username; "
        "never returned",
    )

    @model_validator(mode="after")
    def _officer_office(self) -> "UserCreate":
        if self.role is Role.officer and not self.office_code:
            raise ValueError("an officer needs an office_code")
        return self


class UserUpdate(_Strict):
    """What to change (absent fields stay as they are)."""

    display_name: str | None = Field(default=None, min_length=1, max_length=128, pattern=TEXT)
    role: Annotated[Role | None, Field(strict=False)] = None
    office_code: str | None = Field(
        default=None, pattern=OFFICE, description="null removes the office (not for officers)"
    )
    active: bool | None = Field(
        default=None, description="false disables the account and ends its sessions at once"
    )
    unlock: Literal[True] | None = Field(
        default=None, description="true clears a lock after failed logins"
    )
    password: SecretStr | None = Field(
        default=None,
        min_length=MIN_PASSWORD_LENGTH,
        max_length=1024,
        description="A new password (ends the user's sessions); never returned",
    )

    @model_validator(mode="after")
    def _something(self) -> "UserUpdate":
        if not self.model_fields_set:
            raise ValueError("nothing to change")
        for name in ("display_name", "role", "active", "unlock", "password"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} may not be null")
        return self


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    username: str
    display_name: str
    role: Role
    office_code: str | None
    active: bool
    locked_until: dt.datetime | None
    last_login_at: dt.datetime | None
    created_at: dt.datetime


class ApiKeyCreate(_Strict):
    name: str = Field(min_length=1, max_length=128, pattern=TEXT)
    role: Annotated[Role, Field(strict=False)]
    office_code: str | None = Field(default=None, pattern=OFFICE)
    expires_at: Annotated[dt.datetime | None, Field(strict=False)] = None

    @model_validator(mode="after")
    def _officer_office(self) -> "ApiKeyCreate":
        if self.role is Role.officer and not self.office_code:
            raise ValueError("an officer key needs an office_code")
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a timezone")
        return self


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    prefix: str
    role: Role
    office_code: str | None
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked: bool
    last_used_at: dt.datetime | None

    @computed_field(  # type: ignore[prop-decorator]
        description="Whether the key's expiry has passed (an expired key is refused, "
        "revoked or not)"
    )
    @property
    def expired(self) -> bool:
        if self.expires_at is None:
            return False
        ends = self.expires_at if self.expires_at.tzinfo else self.expires_at.replace(tzinfo=dt.UTC)
        return ends <= dt.datetime.now(dt.UTC)


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The API key. Shown only in this response: store it now.")


CONFLICT: Responses = {409: {"model": ErrorOut, "description": "The username exists"}}
NOT_FOUND: Responses = {404: {"model": ErrorOut, "description": "No such API key"}}
KEY_CONFLICT: Responses = {
    409: {"model": ErrorOut, "description": "An active API key has this name"}
}
USER_CONFLICT: Responses = {
    404: {"model": ErrorOut, "description": "No such user"},
    409: {"model": ErrorOut, "description": "The change would leave no active admin"},
}


def _signed_in(admin: Principal, what: str) -> None:
    """Accounts and keys are administered by a person who signed in, not by an API key."""
    if admin.auth_method != "token":
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{what} by a signed-in user")


def _check_office(request: Request, session: Session, office_code: str | None) -> None:
    if office_code is None:
        return
    services = getattr(request.app.state, "services", None)
    configured = services.queue.office_capacities if services is not None else {}
    try:
        check_office(
            office_code, known_offices(session, configured, request.app.state.layout.validated)
        )
    except InvalidFieldError as exc:
        raise unprocessable(exc.field, str(exc)) from None


@router.get("", response_model=list[UserOut], summary="List users")
def list_users(session: SessionDep, _admin: AdminUser) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


@router.post(
    "",
    response_model=UserOut,
    status_code=status.HTTP_201_CREATED,
    responses=CONFLICT,
    summary="Create a user",
)
def post_user(body: UserCreate, request: Request, session: SessionDep, admin: AdminUser) -> User:
    _signed_in(admin, "users are created")
    if session.scalar(select(User.id).where(User.username == body.username)) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"user {body.username!r} exists")
    _check_office(request, session, body.office_code)
    try:
        user = create_user(
            session,
            username=body.username,
            password=body.password.get_secret_value(),
            role=body.role,
            display_name=body.display_name,
            office_code=body.office_code,
            actor=admin.username,
        )
    except InvalidFieldError as exc:
        raise unprocessable(exc.field, str(exc)) from None
    except AccountConflictError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    session.commit()
    return user


@router.patch(
    "/{username}",
    response_model=UserOut,
    responses=USER_CONFLICT,
    summary="Change a user: disable or enable, role, office, name, password, unlock",
)
def patch_user(
    username: Annotated[str, Path(pattern=USERNAME)],
    body: UserUpdate,
    request: Request,
    session: SessionDep,
    admin: AdminUser,
) -> User:
    _signed_in(admin, "users are changed")
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no user {username!r}")
    given = body.model_fields_set
    if "office_code" in given and body.office_code != user.office_code:
        _check_office(request, session, body.office_code)
    try:
        update_user(
            session,
            user,
            actor=admin.username,
            display_name=body.display_name,
            role=body.role,
            active=body.active,
            unlock=bool(body.unlock),
            office_code=body.office_code if "office_code" in given else UNCHANGED,
        )
        if body.password is not None:
            set_password(session, user, body.password.get_secret_value(), actor=admin.username)
    except InvalidFieldError as exc:
        session.rollback()
        raise unprocessable(exc.field, str(exc)) from None
    except AccountConflictError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    session.commit()
    return user


@router.get("/api-keys", response_model=list[ApiKeyOut], summary="List API keys (never the keys)")
def list_api_keys(session: SessionDep, _admin: AdminUser) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    responses=KEY_CONFLICT,
    summary="Create an API key; the key is shown once, in this response",
)
def post_api_key(
    body: ApiKeyCreate, request: Request, session: SessionDep, admin: AdminUser
) -> ApiKeyCreated:
    _signed_in(admin, "API keys are created")
    _check_office(request, session, body.office_code)
    try:
        row, key = create_api_key(
            session,
            name=body.name,
            role=body.role,
            created_by=admin.username,
            office_code=body.office_code,
            expires_at=body.expires_at,
        )
    except InvalidFieldError as exc:
        session.rollback()
        raise unprocessable(exc.field, str(exc)) from None
    except AccountConflictError as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    session.commit()
    return ApiKeyCreated(**ApiKeyOut.model_validate(row).model_dump(), key=key)


@router.delete(
    "/api-keys/{key_id}",
    response_model=ApiKeyOut,
    responses=NOT_FOUND,
    summary="Revoke an API key",
)
def delete_api_key(
    key_id: Annotated[int, Path(ge=1, le=MAX_INT32)], session: SessionDep, admin: AdminUser
) -> ApiKey:
    # (as their creation: a leaked admin key must not switch off the feeds' keys)
    _signed_in(admin, "API keys are revoked")
    row = revoke_api_key(session, key_id, actor=admin.username)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such API key")
    session.commit()
    return row

"""Users and API keys (admin only)."""

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from sqlalchemy import select

from serving.auth import MIN_PASSWORD_LENGTH, Role, create_api_key, create_user, revoke_api_key
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


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The API key. Shown only in this response: store it now.")


CONFLICT: Responses = {409: {"model": ErrorOut, "description": "The username exists"}}
NOT_FOUND: Responses = {404: {"model": ErrorOut, "description": "No such API key"}}


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
def post_user(body: UserCreate, session: SessionDep, _admin: AdminUser) -> User:
    if session.scalar(select(User.id).where(User.username == body.username)) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"user {body.username!r} exists")
    try:
        user = create_user(
            session,
            username=body.username,
            password=body.password.get_secret_value(),
            role=body.role,
            display_name=body.display_name,
            office_code=body.office_code,
        )
    except ValueError as exc:
        raise unprocessable("password", str(exc)) from None
    session.commit()
    return user


@router.get("/api-keys", response_model=list[ApiKeyOut], summary="List API keys (never the keys)")
def list_api_keys(session: SessionDep, _admin: AdminUser) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key; the key is shown once, in this response",
)
def post_api_key(body: ApiKeyCreate, session: SessionDep, admin: AdminUser) -> ApiKeyCreated:
    created_by = admin.username
    if admin.auth_method != "token":
        raise HTTPException(status.HTTP_403_FORBIDDEN, "API keys are created by a signed-in user")
    row, key = create_api_key(
        session,
        name=body.name,
        role=body.role,
        created_by=created_by,
        office_code=body.office_code,
        expires_at=body.expires_at,
    )
    session.commit()
    return ApiKeyCreated(**ApiKeyOut.model_validate(row).model_dump(), key=key)


@router.delete(
    "/api-keys/{key_id}",
    response_model=ApiKeyOut,
    responses=NOT_FOUND,
    summary="Revoke an API key",
)
def delete_api_key(
    key_id: Annotated[int, Path(ge=1, le=MAX_INT32)], session: SessionDep, _admin: AdminUser
) -> ApiKey:
    row = revoke_api_key(session, key_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such API key")
    session.commit()
    return row

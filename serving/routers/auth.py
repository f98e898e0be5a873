"""Login (OAuth2 password form -> bearer token) and who-am-I."""

import math
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from serving.auth import (
    AuthError,
    LockedOutError,
    Role,
    ServingSettings,
    authenticate_password,
    create_access_token,
    sign_out,
)
from serving.deps import BEARER, CurrentUser, Public, SessionDep
from serving.routers import PROTECTED, TOO_LARGE, ErrorOut

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int


class MeOut(BaseModel):
    username: str
    display_name: str
    role: Role
    office_code: str | None
    auth_method: Literal["token", "api_key"]


@router.post(
    "/login",
    response_model=TokenOut,
    dependencies=[Public],
    summary="Exchange username and password for a short-lived bearer token",
    responses={
        401: {"model": ErrorOut, "description": "Wrong username or password"},
        429: {
            "model": ErrorOut,
            "description": "Too many failed logins: locked; see the Retry-After header",
        },
        **TOO_LARGE,
    },
)
def login(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
) -> TokenOut:
    serving: ServingSettings = request.app.state.serving
    client_ip = request.client.host if request.client else None
    try:
        user = authenticate_password(
            session,
            form.username,
            form.password,
            client_ip=client_ip,
            policy=serving.lockout_policy(),
        )
    except LockedOutError as exc:
        session.rollback()
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many failed logins: try again later",
            headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
        ) from None
    except AuthError:
        session.commit()  # keep the failure counters
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "wrong username or password", headers=BEARER
        ) from None
    session.commit()
    token = create_access_token(
        request.app.state.secret_key, user.username, user.role, serving.token_ttl_seconds
    )
    return TokenOut(access_token=token, token_type="bearer", expires_in=serving.token_ttl_seconds)  # noqa: S106


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **PROTECTED,
        400: {"model": ErrorOut, "description": "An API key cannot sign out: an admin revokes it"},
    },
    summary="Sign out: every token issued to the caller until now stops working",
)
def logout(principal: CurrentUser, session: SessionDep) -> None:
    """Server-side, as the web page's sign-out: the caller's bearer tokens (and web
    sessions) issued until now are refused from now on; audited."""
    if principal.auth_method == "api_key":
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "an API key cannot sign out: an admin revokes it"
        )
    sign_out(session, principal.username)
    session.commit()


@router.get("/me", response_model=MeOut, responses=PROTECTED, summary="The caller")
def me(principal: CurrentUser) -> MeOut:
    return MeOut(
        username=principal.username,
        display_name=principal.display_name,
        role=principal.role,
        office_code=principal.office_code,
        auth_method="api_key" if principal.auth_method == "api_key" else "token",
    )

"""Request dependencies, as `Annotated` aliases (one place, as in full-stack-fastapi-template).

Every endpoint states who may call it with exactly one access dependency:
`require_roles(...)` (a `RoleChecker`, whose `roles` attribute lists the roles)
or `PUBLIC`. `endpoint_roles(app)` walks the routes and returns that matrix.

No `from __future__ import annotations` here: FastAPI resolves the signatures
of callable instances (RoleChecker) without module globals.
"""

from collections.abc import Iterable, Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request, Security, status
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.orm import Session, sessionmaker

from serving.auth import (
    API_KEY_PREFIX,
    AuthError,
    Principal,
    Role,
    principal_from_api_key,
    principal_from_token,
)

LOGIN_PATH = "/api/v1/auth/login"
BEARER = {"WWW-Authenticate": "Bearer"}

oauth2_scheme = OAuth2PasswordBearer(tokenUrl=LOGIN_PATH, auto_error=False)
api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="API key (shown once at creation)"
)


def get_session(request: Request) -> Iterator[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    with factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(
    request: Request,
    session: SessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    api_key: Annotated[str | None, Security(api_key_scheme)],
) -> Principal:
    """The caller, from `X-API-Key` or `Authorization: Bearer <token or API key>`."""
    credential = api_key or token
    if not credential:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not authenticated", headers=BEARER)
    try:
        if credential.startswith(API_KEY_PREFIX):
            principal = principal_from_api_key(session, credential)
            session.commit()  # last_used_at
        else:
            principal = principal_from_token(session, request.app.state.secret_key, credential)
    except AuthError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers=BEARER) from exc
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


class RoleChecker:
    """Access dependency: the caller must hold one of `roles`."""

    def __init__(self, roles: Iterable[Role]) -> None:
        self.roles: frozenset[Role] = frozenset(Role(r) for r in roles)
        if not self.roles:
            raise ValueError("require_roles needs at least one role (use PUBLIC for none)")

    # (async: it only compares the role, so the event loop runs it, without the
    # worker-thread round trip FastAPI gives a plain function)
    async def __call__(self, principal: CurrentPrincipal) -> Principal:
        if principal.role not in self.roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {principal.role} may not call this endpoint"
            )
        return principal

    def __repr__(self) -> str:
        return f"require_roles({', '.join(sorted(self.roles))})"


class PublicAccess:
    """Access dependency of endpoints anyone may call (health, metrics, login)."""

    roles = None

    async def __call__(self) -> None:
        return None

    def __repr__(self) -> str:
        return "PUBLIC"


def require_roles(*roles: Role) -> RoleChecker:
    return RoleChecker(roles)


PUBLIC = PublicAccess()
Public = Depends(PUBLIC)

ALL_ROLES = tuple(Role)
CurrentUser = Annotated[Principal, Depends(require_roles(*ALL_ROLES))]
AdminUser = Annotated[Principal, Depends(require_roles(Role.admin))]
OfficerUser = Annotated[Principal, Depends(require_roles(Role.officer, Role.admin))]
AnalystUser = Annotated[Principal, Depends(require_roles(Role.analyst, Role.admin))]
DataScientistUser = Annotated[Principal, Depends(require_roles(Role.data_scientist, Role.admin))]
AuditorUser = Annotated[Principal, Depends(require_roles(Role.auditor, Role.admin))]


def ensure_office(principal: Principal, office_code: str) -> None:
    """Officers see only their own office; other roles are not office-bound."""
    if principal.role is Role.officer and principal.office_code != office_code:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "officers see their own office only")


Access = frozenset[Role] | None  # None: public


def _access_of(dependant: Dependant) -> list[RoleChecker | PublicAccess]:
    found: list[RoleChecker | PublicAccess] = []
    for sub in dependant.dependencies:
        if isinstance(sub.call, RoleChecker | PublicAccess):
            found.append(sub.call)
        found.extend(_access_of(sub))
    return found


def api_routes(app: FastAPI) -> list[tuple[str, APIRoute]]:
    """Every API route with its full path (FastAPI before and after lazy router inclusion).

    Declare access on the route or its APIRouter, not on `include_router(dependencies=...)`.
    """
    found: list[tuple[str, APIRoute]] = []
    for route in app.routes:
        if isinstance(route, APIRoute):
            found.append((route.path, route))
            continue
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is None:
            continue
        for context in contexts():
            original = context.original_route
            if isinstance(original, APIRoute):
                found.append((context.path or original.path, original))
    return found


def endpoint_roles(app: FastAPI) -> dict[tuple[str, str], Access]:
    """(method, path template) -> allowed roles (None: public), for every API route.

    Raises if a route declares no access dependency or more than one.
    """
    matrix: dict[tuple[str, str], Access] = {}
    for path, route in api_routes(app):
        access = {id(a): a for a in _access_of(route.dependant)}
        if len(access) != 1:
            raise RuntimeError(
                f"{sorted(route.methods or ())} {path}: needs exactly one access "
                f"dependency, found {list(access.values())}"
            )
        (checker,) = access.values()
        for method in sorted(route.methods or ()):
            matrix[(method, path)] = checker.roles
    return matrix

"""Request dependencies, as `Annotated` aliases (one place, as in full-stack-fastapi-template).

Every endpoint states who may call it with exactly one access dependency:
`require_roles(...)` (a `RoleChecker`, whose `roles` attribute lists the roles)
or `PUBLIC`. `endpoint_roles(app)` walks the routes and returns that matrix.

No `from __future__ import annotations` here: FastAPI resolves the signatures
of callable instances (RoleChecker) without module globals.
"""

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Annotated, ParamSpec, TypeVar

import anyio.to_thread
from anyio import CancelScope, CapacityLimiter
from fastapi import Depends, FastAPI, HTTPException, Request, Security, status
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

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
    principal = _principal(session, request.app.state.secret_key, _credential(token, api_key))
    request.state.principal = principal
    return principal


def _credential(token: str | None, api_key: str | None) -> str:
    credential = api_key or token
    if not credential:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "not authenticated", headers=BEARER)
    return credential


def _principal(session: Session, secret: bytes, credential: str) -> Principal:
    """The caller a credential names, read in `session` (401 if it names none)."""
    try:
        if credential.startswith(API_KEY_PREFIX):
            principal = principal_from_api_key(session, credential)
            session.commit()  # last_used_at
        else:
            principal = principal_from_token(session, secret, credential)
    except AuthError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc), headers=BEARER) from exc
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]

_P = ParamSpec("_P")
_T = TypeVar("_T")


class InSession:
    """The request's session and its caller, for an `async def` endpoint that does all
    its database and CPU work in ONE worker-thread call (`run`).

    A plain (sync) endpoint costs five worker-thread round trips: `get_session`'s
    enter and exit, `get_principal`, the endpoint and the validation of its answer
    (FastAPI runs each of them in the thread pool). Here the session is opened and the
    caller read in one (`session_and_principal`, a dependency: the caller is known,
    and refused with 401/403, before the body is read as a model, as elsewhere), then
    `run` does the endpoint's work and closes the session in a second; the event loop
    never waits on the database. Same session, same transaction, same caller and the
    same errors as `SessionDep` with `get_principal`."""

    def __init__(self, session: Session, principal: Principal) -> None:
        self.session = session
        self.principal = principal
        self.closed = False

    async def run(self, work: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """`work(*args, **kwargs)` in a worker thread, then the session closed there."""
        return await run_in_threadpool(self._run_and_close, work, *args, **kwargs)

    def _run_and_close(self, work: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return work(*args, **kwargs)
        finally:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.session.close()


def _open_in_session(factory: sessionmaker[Session], secret: bytes, credential: str) -> InSession:
    session = factory()
    try:
        return InSession(session, _principal(session, secret, credential))
    except BaseException:
        session.close()
        raise


async def session_and_principal(
    request: Request,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    api_key: Annotated[str | None, Security(api_key_scheme)],
) -> AsyncIterator[InSession]:
    """As `get_session` and `get_principal` together, in one worker-thread call."""
    credential = _credential(token, api_key)
    factory: sessionmaker[Session] = request.app.state.session_factory
    bound = await run_in_threadpool(
        _open_in_session, factory, request.app.state.secret_key, credential
    )
    request.state.principal = bound.principal
    try:
        yield bound
    finally:
        if not bound.closed:  # (refused before `run`: 403, 415, 422, ...)
            # shielded and with a limiter of its own, as FastAPI closes a sync
            # dependency: a cancelled request still gives its connection back
            with CancelScope(shield=True):
                await anyio.to_thread.run_sync(bound.close, limiter=CapacityLimiter(1))


InSessionDep = Annotated[InSession, Depends(session_and_principal)]


async def principal_in_session(bound: InSessionDep) -> Principal:
    return bound.principal


PrincipalInSession = Annotated[Principal, Depends(principal_in_session)]


class RoleChecker:
    """Access dependency: the caller must hold one of `roles`."""

    def __init__(self, roles: Iterable[Role]) -> None:
        self.roles: frozenset[Role] = frozenset(Role(r) for r in roles)
        if not self.roles:
            raise ValueError("require_roles needs at least one role (use PUBLIC for none)")

    # (async: it only compares the role, so the event loop runs it, without the
    # worker-thread round trip FastAPI gives a plain function)
    async def __call__(self, principal: CurrentPrincipal) -> Principal:
        return self.check(principal)

    def check(self, principal: Principal) -> Principal:
        if principal.role not in self.roles:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"role {principal.role} may not call this endpoint"
            )
        return principal

    def __repr__(self) -> str:
        return f"require_roles({', '.join(sorted(self.roles))})"


class InSessionRoleChecker(RoleChecker):
    """As `RoleChecker`, the caller read with the request's `InSession`."""

    async def __call__(self, principal: PrincipalInSession) -> Principal:
        return self.check(principal)


class PublicAccess:
    """Access dependency of endpoints anyone may call (health, metrics, login)."""

    roles = None

    async def __call__(self) -> None:
        return None

    def __repr__(self) -> str:
        return "PUBLIC"


def require_roles(*roles: Role) -> RoleChecker:
    return RoleChecker(roles)


def require_roles_in_session(*roles: Role) -> InSessionRoleChecker:
    """`require_roles` for an endpoint that takes `InSessionDep` (not `SessionDep`)."""
    return InSessionRoleChecker(roles)


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

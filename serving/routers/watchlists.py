"""Watchlists: the UN Security Council Consolidated List (XML) and national lists (CSV).
Loading a list replaces its entries in the database (kept across restarts) and in
validated/watchlist.parquet, and rescreens the stored shipments when it changed.
These routes take bodies up to `ServingSettings.max_body_bytes_by_path` (64 MiB by
default), not the global 1 MiB limit."""

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from serving.deps import AnalystUser, SessionDep
from serving.routers import PROTECTED
from serving.routers._common import INVALID_UPLOAD, ServicesDep, http_error
from serving.schemas import WatchlistLoadOut
from serving.scoring import ModelNotReadyError
from serving.services import ServiceError, load_watchlist

router = APIRouter(prefix="/api/v1/watchlists", tags=["watchlists"], responses=PROTECTED)


def _body(media: str) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {media: {"schema": {"type": "string"}}}}}


def _refused(message: str) -> HTTPException:
    return http_error(ServiceError(422, message, "file"))


def _xml_problem(exc: Exception) -> str:
    """Why an upload is not XML, as the CLI says it (``unclosed token: line 1067,
    column 282``): the parser's reason and position, built from its error code so
    that nothing of the document is echoed; other failures by their type alone."""
    from xml.etree.ElementTree import ParseError
    from xml.parsers.expat import ErrorString

    code, position = getattr(exc, "code", None), getattr(exc, "position", None)
    if not isinstance(exc, ParseError) or not isinstance(code, int) or position is None:
        return type(exc).__name__
    line, column = position
    return f"{ErrorString(code) or 'not well-formed'}: line {line}, column {column}"


@router.post(
    "/un",
    response_model=WatchlistLoadOut,
    responses=INVALID_UPLOAD,
    openapi_extra=_body("application/xml"),
    summary="Load the UN SC Consolidated List (XML); rescreens stored shipments",
)
async def post_un(
    request: Request, session: SessionDep, user: AnalystUser, services: ServicesDep
) -> dict[str, Any]:
    raw = await request.body()

    def work() -> dict[str, Any]:
        from defusedxml import ElementTree as DefusedET
        from defusedxml.common import DefusedXmlException

        from data_contracts.loaders import ReferenceFileError
        from data_contracts.loaders.un_sc import LIST_NAME, parse_un_consolidated

        try:
            root = DefusedET.fromstring(raw)
            frame = parse_un_consolidated(root, "upload")
        except (ReferenceFileError, DefusedXmlException) as exc:
            raise _refused(str(exc)) from None
        except Exception as exc:  # xml ParseError and friends
            raise _refused(f"not a readable XML document: {_xml_problem(exc)}") from None
        return load_watchlist(session, services, frame, user.username, [LIST_NAME])

    try:
        return await run_in_threadpool(work)
    except (ServiceError, ModelNotReadyError) as exc:
        raise http_error(exc) from None


@router.post(
    "/national",
    response_model=WatchlistLoadOut,
    responses=INVALID_UPLOAD,
    openapi_extra=_body("text/csv"),
    summary="Load a national watchlist (CSV); rescreens stored shipments",
)
async def post_national(
    request: Request,
    session: SessionDep,
    user: AnalystUser,
    services: ServicesDep,
    list_name: Annotated[
        str,
        Query(
            pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
            description="The national list loaded (its entries are replaced); required, so "
            "that two lists never replace each other by default. `UN-SC` is reserved: the "
            "UN list is loaded from its XML (`/un`)",
        ),
    ],
) -> dict[str, Any]:
    from data_contracts.loaders.national import list_name_problem

    problem = list_name_problem(list_name)
    if problem:
        raise HTTPException(
            422, detail=[{"type": "value_error", "loc": ["query", "list_name"], "msg": problem}]
        )
    raw = await request.body()

    def work() -> dict[str, Any]:
        from data_contracts.loaders import ReferenceFileError
        from data_contracts.loaders.national import load_national_csv

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload.csv"
            path.write_bytes(raw)
            try:
                frame = load_national_csv(path, list_name)
            except ReferenceFileError as exc:
                raise _refused(str(exc).replace(str(path), "upload")) from None
        return load_watchlist(session, services, frame, user.username, [list_name])

    try:
        return await run_in_threadpool(work)
    except (ServiceError, ModelNotReadyError) as exc:
        raise http_error(exc) from None

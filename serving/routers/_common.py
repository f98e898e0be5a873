"""Helpers shared by the API routers: services from the app, errors to HTTP."""

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from serving.scoring import ModelNotReadyError
from serving.services import ServiceError, Services


async def services_of(request: Request) -> Services:  # (no I/O: no worker thread)
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise HTTPException(503, "the service is starting")
    return services


def http_error(exc: ServiceError | ModelNotReadyError) -> HTTPException:
    if isinstance(exc, ModelNotReadyError):
        return HTTPException(503, f"no scoring model loaded: {exc}")
    if exc.status == 422:
        field = exc.field or "body"
        return HTTPException(
            422, detail=[{"type": "value_error", "loc": ["body", field], "msg": exc.message}]
        )
    return HTTPException(exc.status, exc.message)


ServicesDep = Annotated[Services, Depends(services_of)]


INVALID_UPLOAD: dict[int | str, dict[str, object]] = {
    422: {
        "description": "The uploaded file was refused: each problem with where and why",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["detail"],
                    "properties": {"detail": {"type": "array", "items": {"type": "object"}}},
                }
            }
        },
    }
}

"""API routers, one per resource, and the error responses they document."""

from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel


class ErrorOut(BaseModel):
    """An error: `detail` says what went wrong (never echoes secrets)."""

    detail: str


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


Responses = dict[int | str, dict[str, Any]]

UNAUTHORIZED: Responses = {
    401: _error("Not authenticated, or the token or API key is invalid or expired")
}
FORBIDDEN: Responses = {403: _error("The caller's role may not call this endpoint")}
TOO_LARGE: Responses = {413: _error("Request body larger than the configured limit")}
UNREADABLE: Responses = {400: _error("The request body cannot be read (not JSON, not UTF-8)")}
PROTECTED: Responses = {**UNREADABLE, **UNAUTHORIZED, **FORBIDDEN, **TOO_LARGE}


def unprocessable(field: str, message: str) -> HTTPException:
    """A 422 for a business rule, in the same shape as FastAPI's validation errors."""
    return HTTPException(
        422, detail=[{"type": "value_error", "loc": ["body", field], "msg": message}]
    )

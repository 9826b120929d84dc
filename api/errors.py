"""One error shape over HTTP: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from core.errors import (
    Conflict,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    RuntimeFailure,
    ShipdeckError,
)

log = logging.getLogger(__name__)

STATUS: list[tuple[type[ShipdeckError], int]] = [
    (NotAuthenticated, 401),
    (PermissionDenied, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidInput, 422),
    (RuntimeFailure, 502),
]


class ErrorDetail(BaseModel):
    """What went wrong: a stable code, a sentence, and data about it."""

    code: str = Field(description="A stable code, e.g. not_found, illegal_transition.")
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    """The one error shape of every HTTP error."""

    error: ErrorDetail


# What each documented status means on this API.
MEANING = {
    400: "The body is not valid JSON.",
    401: "No token, or the token is unknown or revoked.",
    403: "Your role on the project does not allow this.",
    404: "No such object, or it belongs to a project you have no role on (the same answer).",
    409: "The release is not in a state this action starts from (or moved meanwhile: "
    "`state_changed`), the preview expired or drifted, an Idempotency-Key was reused with "
    "another body, or the database interrupted the call after part of it was saved "
    "(`interrupted`: reload and run it again if it still applies).",
    413: "The body is larger than the server accepts.",
    422: "The request does not fit the schema, or names something impossible.",
    502: "The target's runtime could not be reached or refused the request.",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer, all in the one error shape."""
    return {code: {"model": ErrorBody, "description": MEANING[code]} for code in codes}


READ = (401, 403, 404, 422)  # every authenticated read
WRITE = (400, 401, 403, 404, 409, 413, 422)  # every mutating call


def status_for(exc: ShipdeckError) -> int:
    """The HTTP status of a core error."""
    return next((code for cls, code in STATUS if isinstance(exc, cls)), 400)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one error shape."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(exc: ShipdeckError) -> JSONResponse:
    """A core error as an HTTP response."""
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, NotAuthenticated) else None
    return JSONResponse(
        error_body(exc.code, exc.message, exc.details), status_code=status_for(exc), headers=headers
    )


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    allowed = [
        method
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL
            for route in request.app.router.routes
        )
    ]
    return ", ".join(allowed)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into the one shape."""

    @app.exception_handler(ShipdeckError)
    async def _core(request: Request, exc: ShipdeckError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        given = getattr(request.state, "unchecked_bearer", None)
        if given is not None:
            # A route that checks its token in its one thread hop (api.invoke.invoke_read)
            # still answers an unknown token 401 before it says anything about the input.
            from api.deps import resolve_token

            try:
                await run_in_threadpool(resolve_token, request.app.state.services, given.token)
            except NotAuthenticated as refused:
                return error_response(refused)
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        if any(e["type"] == "json_invalid" for e in errors):
            return JSONResponse(
                error_body(
                    "malformed_json", "the request body is not valid JSON", {"errors": errors}
                ),
                status_code=400,
            )
        return JSONResponse(
            error_body("invalid_input", "the request does not fit the schema", {"errors": errors}),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body("internal", "an unexpected error happened; it was logged"), status_code=500
        )

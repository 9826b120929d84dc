"""Run a tool for a REST request: the one path every route and the tool door take."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import Bearer, resolve_token
from api.errors import error_body, status_for
from api.wiring import Services
from core import idempotency
from core.audit.service import canonical_json
from core.errors import NotAuthenticated, ShipdeckError
from core.identity.tokens import authenticate_token, authenticate_with
from core.permissions import Actor
from tools.base import Tool, ToolContext
from tools.registry import get_tool


def invoke(
    request: Request,
    services: Services,
    actor: Actor,
    name: str,
    args: dict[str, Any] | BaseModel,
    *,
    status_code: int = 200,
) -> JSONResponse:
    """Run tool `name` in one of `Services.turns`; mutating calls honour the Idempotency-Key
    header."""
    call = partial(_invoke, request, services, actor, name, args, status_code)
    return _in_turn(services, name, call)()


def _invoke(
    request: Request,
    services: Services,
    actor: Actor,
    name: str,
    args: dict[str, Any] | BaseModel,
    status_code: int,
) -> JSONResponse:
    tool = get_tool(name)
    key = request.headers.get("idempotency-key")
    if not tool.mutating or key is None or actor.user_id is None:
        return _run(services, actor, name, args, status_code)
    parsed = tool.parse(args)
    fingerprint = idempotency.request_hash(
        "TOOL", name, canonical_json(parsed.model_dump(mode="json")).encode()
    )
    with services.sessions() as session:
        previous = idempotency.begin(
            session,
            user_id=actor.user_id,
            key=key,
            fingerprint=fingerprint,
            ttl_seconds=services.settings.idempotency_ttl_seconds,
        )
    if previous is not None:
        return JSONResponse(
            previous.response,
            status_code=previous.status_code or 200,
            headers={"Idempotent-Replayed": "true"},
        )
    try:
        response = _run(services, actor, name, parsed, status_code)
    except BaseException:
        with services.sessions() as session:
            idempotency.forget(session, user_id=actor.user_id, key=key)
        raise
    if response.status_code >= 500:
        with services.sessions() as session:
            idempotency.forget(session, user_id=actor.user_id, key=key)
        return response
    with services.sessions() as session:
        idempotency.finish(
            session,
            user_id=actor.user_id,
            key=key,
            status_code=response.status_code,
            response=_json(response),
        )
    return response


async def invoke_as(
    request: Request,
    services: Services,
    given: Bearer,
    name: str,
    args: dict[str, Any] | BaseModel,
    *,
    status_code: int = 200,
) -> JSONResponse:
    """Run tool `name` (a write: its Idempotency-Key honoured) for the bearer of a token: the
    token check and the tool share one worker-thread hop.

    A sync route with the actor as a sync dependency took two hops, each a turn in the queue
    for the server's worker threads: under load that queue is the longest wait of a request
    (a write at 50 clients waited ~120 ms per hop on average, up to ~0.5 s), and a write
    operation is three requests."""
    call = partial(_as_bearer, request, services, given, name, args, status_code)
    return await run_in_threadpool(_in_turn(services, name, call))


def _as_bearer(
    request: Request,
    services: Services,
    given: Bearer,
    name: str,
    args: dict[str, Any] | BaseModel,
    status_code: int,
) -> JSONResponse:
    actor = resolve_token(services, given.token).actor.via(given.channel, given.request_id)
    return invoke(request, services, actor, name, args, status_code=status_code)


async def invoke_read(
    services: Services, given: Bearer, name: str, args: dict[str, Any] | BaseModel
) -> JSONResponse:
    """Run read tool `name` for the bearer of a token: the token check and the tool share one
    worker-thread hop and one pooled connection (it was a hop and a checkout each); a live
    read gives its connection back before the runtime is called (see `_read`).

    On SQLite the hop waits for one of `Services.read_limiter`'s turns, unless the tool reads a
    runtime's live state: a slow cluster must not hold the database reads behind it."""
    read = _in_turn(services, name, partial(_read, services, given, name, args))
    limiter = None if get_tool(name).live else services.read_limiter
    if limiter is None:
        return await run_in_threadpool(read)
    return await anyio.to_thread.run_sync(read, limiter=limiter)


def _in_turn(
    services: Services, name: str, call: Callable[[], JSONResponse]
) -> Callable[[], JSONResponse]:
    """`call`, to run in one of `Services.turns` (PostgreSQL), unless the tool reads a
    runtime's live state (a slow cluster must not hold database work behind it)."""
    return call if get_tool(name).live else services.in_turn(call)


def _read(
    services: Services, given: Bearer, name: str, args: dict[str, Any] | BaseModel
) -> JSONResponse:
    tool = get_tool(name)
    if tool.mutating:
        raise ValueError(f"{name} changes state: run it through invoke()")
    if tool.live:
        # A live read calls its runtime, which may take seconds, and the sandbox reads its
        # state on a connection of its own: no pooled connection is held across the call.
        actor = resolve_token(services, given.token).actor.via(given.channel, given.request_id)
        return _run(services, actor, name, args, 200)
    args, first = _first_read(tool, args)
    with services.read_connection() as connection:

        def reads() -> Session:
            return Session(bind=connection, expire_on_commit=False)

        rows = None
        with reads() as session:
            if first is None:
                credential = authenticate_token(session, given.token)
            else:
                credential, rows = authenticate_with(session, given.token, *first)
        if credential is None:
            raise NotAuthenticated("the token is unknown, expired or revoked")
        actor = credential.actor.via(given.channel, given.request_id)
        ctx = replace(services.context(actor), reads=reads, first_rows=rows)
        return _run_in(ctx, name, args, 200)


def _first_read(
    tool: Tool[Any, Any], args: dict[str, Any] | BaseModel
) -> tuple[dict[str, Any] | BaseModel, tuple[Select[Any], dict[str, Any]] | None]:
    """The arguments (parsed, if the tool has a first statement) and that statement, to send
    with the token check. Arguments it cannot judge go to the call as they came: the call
    refuses them itself, after the check, as it did before."""
    if tool.first_read is None:
        return args, None
    try:
        parsed = tool.parse(args)
        return parsed, tool.first_read(parsed)
    except Exception:  # raised again by the call, once the caller is known
        return args, None


def _run(
    services: Services,
    actor: Actor,
    name: str,
    args: dict[str, Any] | BaseModel,
    status_code: int,
) -> JSONResponse:
    return _run_in(services.context(actor), name, args, status_code)


def _run_in(
    ctx: ToolContext, name: str, args: dict[str, Any] | BaseModel, status_code: int
) -> JSONResponse:
    try:
        result = get_tool(name).run(ctx, args)
    except ShipdeckError as exc:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_for(exc))
    return ModelResponse(result, status_code=status_code)


class ModelResponse(JSONResponse):
    """A tool's output model as JSON, serialized once by pydantic-core.

    No intermediate dict and no json.dumps; and as a Response, FastAPI does not validate the
    already-valid view against the route's response_model a second time.
    """

    def render(self, content: Any) -> bytes:
        if isinstance(content, BaseModel):
            return content.model_dump_json().encode()
        return super().render(content)


def _json(response: JSONResponse) -> Any:
    import json

    return json.loads(bytes(response.body))

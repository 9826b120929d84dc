"""The FastAPI application, built by a factory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import errors
from api.asgi import HttpMiddleware
from api.audit_stream import start_audit_stream
from api.deps import REQUEST_ID
from api.errors import error_body
from api.headers import SecurityHeaders
from api.logs import install_redaction
from api.mcp.http import HttpDoor
from api.metrics import Metrics, name_endpoint
from api.routes import (
    approvals,
    audit,
    auth,
    chat,
    console,
    desk,
    health,
    integrations,
    me,
    metrics,
    releases,
    targets,
    tokens,
    tools,
)
from api.wiring import Services
from core.config import Settings, get_settings
from core.notify.settings import NotifySettings, direct_config
from core.notify.worker import NotifyWorker


class BodyLimit(HttpMiddleware):
    """Refuse request bodies over `limit` bytes with 413, streamed or not."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its body read, or refuse it."""
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        # Read the body up front (it is small by definition): raising from inside receive()
        # would be swallowed by the framework's body parsing.
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._refuse(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        import json

        body = json.dumps(
            error_body("too_large", f"request bodies are limited to {self.limit} bytes")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RequestId(HttpMiddleware):
    """Give each HTTP request an id (the caller's X-Request-ID when well-formed) and echo it."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its id; answer with it."""
        given = Headers(scope=scope).get("x-request-id", "")
        rid = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app; it migrates (if configured) and starts the sweeper on startup."""
    settings = settings or get_settings()
    wired = services or Services.build(settings)
    mcp_door = HttpDoor(wired)
    notify_settings = NotifySettings()
    notifier = NotifyWorker(
        wired.sessions,
        public_url=notify_settings.public_url,
        poll_seconds=notify_settings.notify_poll_seconds,
        max_attempts=notify_settings.notify_max_attempts,
        direct=direct_config(notify_settings),
    )
    install_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            wired.migrate()
        _ = wired.chat  # a misconfigured planner fails here, not at the first chat
        wired.runner.recover()
        wired.runner.start_sweeper(settings.sweep_interval_seconds)
        _ = wired.hub  # listen to live events from the start
        streaming = start_audit_stream(settings, wired) if settings.audit_stream_in_serve else None
        if notify_settings.notify_workers:
            unsubscribe = wired.bus.subscribe(lambda _event: notifier.poke())
            notifier.start()
        async with mcp_door.running():
            yield
        if notify_settings.notify_workers:
            unsubscribe()
            notifier.stop()
        wired.runner.stop_sweeper()
        if streaming is not None:
            streaming()
        wired.access.flush()  # reads queued by the last requests reach the access log
        if services is None:
            wired.close()

    app = FastAPI(
        title="shipdeck",
        version="0.1.0",
        description="Release command center: preview, approve, apply and audit releases.",
        lifespan=lifespan,
        docs_url=None,  # served from local files by api.routes.console (no CDN)
        redoc_url=None,
    )
    app.state.services = wired
    app.state.notify_settings = notify_settings
    app.state.notifier = notifier
    errors.install(app)

    app.add_middleware(RequestId)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(Metrics)  # outermost: it times and counts refusals (413) as well
    routers = (
        health,
        metrics,
        me,
        auth,
        tokens,
        targets,
        releases,
        desk,
        approvals,
        audit,
        tools,
        chat,
        integrations,
        console,
    )
    for router in routers:
        app.include_router(router.router)
    swagger, static = StaticFiles(directory=console.SWAGGER), StaticFiles(directory=console.STATIC)
    app.mount("/static/swagger", swagger, name="swagger")
    # A route, not a mount: MCP clients POST to exactly /mcp, and a mount would redirect it.
    mcp = Route("/mcp", endpoint=mcp_door.app, name="mcp")
    app.router.routes.append(mcp)
    app.mount("/static", static, name="static")
    for endpoint, label in (
        (swagger, "/static/swagger"),
        (mcp.endpoint, "/mcp"),
        (static, "/static"),
    ):
        name_endpoint(endpoint, label)
    return app

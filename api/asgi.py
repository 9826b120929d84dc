"""The shape the app's own middlewares share."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HttpMiddleware:
    """A plain ASGI middleware acting on HTTP requests; WebSockets and lifespan pass through.

    Plain ASGI: a `@app.middleware("http")` function would run every request through an
    extra task and response stream (BaseHTTPMiddleware), a measurable share of a read.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one HTTP request; `self.app` passes it on."""
        raise NotImplementedError

"""The MCP door over streamable HTTP, mounted by the API server at `/mcp`.

Bearer tokens are the REST tokens (the same lookup, so revocation and role changes apply at
once); a session is bound to the credential that opened it, so another token cannot use it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import ConfigDict, Field
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import resolve_token
from api.errors import error_body
from api.mcp.server import Context, build_server
from api.wiring import Services
from core.errors import NotAuthenticated, ShipdeckError
from core.permissions import Actor


class ShipdeckAccess(AccessToken):
    """The SDK's access token, carrying the actor the lookup found (one lookup per request)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    actor: Actor | None = Field(default=None, exclude=True)


class ShipdeckTokens:
    """The MCP SDK's token verifier over shipdeck's own token lookup."""

    def __init__(self, services: Services, public_url: str | None = None) -> None:
        self.services = services
        # Behind an ingress the Host header is the cluster's; links must carry the public one.
        self.public_url = public_url or os.environ.get("SHIPDECK_PUBLIC_URL") or None

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's principal, or None when it is unknown or revoked."""
        try:
            lookup = self.services.in_turn(resolve_token, self.services, token)
            credential = await anyio.to_thread.run_sync(lookup)
            actor = credential.actor
        except ShipdeckError:
            return None
        return ShipdeckAccess(
            token=token,
            client_id=f"shipdeck:{actor.user_id}",
            scopes=[],
            subject=actor.name,
            actor=actor,
        )


class HttpDoor:
    """The ASGI app for `/mcp` and the session manager the server's lifespan runs."""

    def __init__(self, services: Services, public_url: str | None = None) -> None:
        self.services = services
        # Behind an ingress the Host header is the cluster's; links must carry the public one.
        self.public_url = public_url or os.environ.get("SHIPDECK_PUBLIC_URL") or None
        self.server = build_server(services, self._identity, self._console_url)
        self.manager: StreamableHTTPSessionManager | None = None
        self.app: ASGIApp = AuthenticationMiddleware(
            RequireAuthMiddleware(self._serve, required_scopes=[]),
            backend=BearerAuthBackend(ShipdeckTokens(services)),
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run a session manager for the app's lifetime (a new one each time it starts)."""
        manager = StreamableHTTPSessionManager(
            app=self.server,
            # Every request carries a bearer token: a page on another origin cannot forge one,
            # and the server is reached by whatever host name the cluster gives it.
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        async with manager.run():
            self.manager = manager
            try:
                yield
            finally:
                self.manager = None

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.manager is None:
            response = JSONResponse(error_body("unavailable", "shipdeck is stopping"), 503)
            await response(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)

    def _identity(self, ctx: Context) -> Actor:
        request = ctx.request
        user = request.scope.get("user") if isinstance(request, Request) else None
        access: Any = getattr(user, "access_token", None)
        # Verified on this very HTTP request by the bearer middleware: revocation applies.
        if isinstance(access, ShipdeckAccess) and access.actor is not None:
            return access.actor
        raise NotAuthenticated("send Authorization: Bearer <token>")

    def _console_url(self, ctx: Context) -> str | None:
        if self.public_url:
            return self.public_url
        request = ctx.request
        if not isinstance(request, Request):
            return None
        host = request.headers.get("host")
        return f"{request.url.scheme}://{host}" if host else None

"""`shipdeck mcp`: the MCP server over stdio, as the user whose token it was given."""

from __future__ import annotations

import anyio
from mcp.server.stdio import stdio_server

from api.deps import resolve_token
from api.mcp.server import Context, build_server
from api.wiring import Services
from core.permissions import Actor


def serve_stdio(services: Services, token: str, console_url: str | None) -> None:
    """Serve MCP on stdin/stdout until the client closes it.

    The token is resolved on every call, so revoking it or lowering the role takes effect
    at once, as it does for REST.
    """

    def identity(ctx: Context) -> Actor:  # in a worker thread: its lookup takes a turn
        return services.in_turn(resolve_token, services, token)().actor

    server = build_server(services, identity, lambda ctx: console_url)

    async def main() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(main)


def check_token(services: Services, token: str) -> Actor:
    """The token's actor, or NotAuthenticated: checked before serving anything."""
    return resolve_token(services, token).actor

"""Browser hardening headers on every HTTP response (console, API and docs alike)."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from api.asgi import HttpMiddleware

# The console is one page of files served by this app: scripts and styles only from files here
# (no inline script, no inline style attribute), live updates over this host's WebSocket.
CONSOLE_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
# Swagger UI (served from the installed fastapi-offline files, no CDN) sets style attributes from
# its own script; scripts stay file-only.
DOCS_POLICY = CONSOLE_POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
DOCS_PATHS = ("/docs", "/static/swagger/")

HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def policy_for(path: str) -> str:
    """The Content-Security-Policy of a path."""
    return DOCS_POLICY if path.startswith(DOCS_PATHS) else CONSOLE_POLICY


class SecurityHeaders(HttpMiddleware):
    """Add CSP, nosniff, frame and referrer rules to every HTTP response."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer with the headers added."""
        policy = policy_for(scope.get("path", ""))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["content-security-policy"] = policy
                for name, value in HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)

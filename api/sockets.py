"""What keeps the chat WebSocket cheap and same-origin: origin check, auth frame, outbox."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

# Close codes (RFC 6455): policy violation, and "try again later" for a client too slow to read.
POLICY_VIOLATION = 1008
TRY_AGAIN_LATER = 1013


def origin_allowed(origin: str | None, host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a handshake's Origin may open a socket.

    No Origin means no browser (scripts, `shipdeck chat`): the token alone decides. A browser
    may connect from the origin the console is served from (same host and port as the request)
    or from an origin in the configured allow-list.
    """
    if origin is None:
        return True
    normalized = origin.strip().rstrip("/").lower()
    if normalized in {o.strip().rstrip("/").lower() for o in allowed}:
        return True
    parts = urlsplit(normalized)
    if parts.scheme not in ("http", "https") or not parts.netloc or not host:
        return False
    return parts.netloc == host.strip().lower()


class Outbox:
    """A bounded queue of frames for one socket, fed from any thread.

    A client that stops reading must not make the server hold frames without limit: once
    `limit` frames wait, the queue is dropped and the socket is closed with 1013; the client
    reconnects and gets its history and open cards again.
    """

    OVERFLOW: dict[str, Any] = {"type": "__overflow__"}
    CLOSE: dict[str, Any] = {"type": "__close__"}  # the token went: say why, then close

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=limit + 1)
        self.limit = limit
        self.overflowed = False
        self._lock = threading.Lock()
        self._arriving: list[dict[str, Any]] = []  # sent from other threads, not yet queued

    def send(self, frame: dict[str, Any]) -> None:
        """Queue a frame (thread-safe).

        Frames sent while an earlier one still waits to be handed to the loop join it: a burst
        (a reply's last delta and the reply) wakes the loop once. Nothing waits for company.
        """
        with self._lock:
            self._arriving.append(frame)
            if len(self._arriving) > 1:
                return
        self._loop.call_soon_threadsafe(self._hand_over)

    def _hand_over(self) -> None:
        with self._lock:
            frames, self._arriving = self._arriving, []
        for frame in frames:
            self.offer(frame)

    def offer(self, frame: dict[str, Any]) -> None:
        """Queue a frame from the loop's thread; on overflow keep only the close marker."""
        if self.overflowed:
            return
        if self._queue.qsize() >= self.limit:
            self.overflowed = True
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(self.OVERFLOW)
            return
        self._queue.put_nowait(frame)

    def close(self) -> None:
        """Queue the close marker after what is queued (thread-safe; never dropped)."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, self.CLOSE)

    async def next(self) -> dict[str, Any]:
        """The next frame to write (OVERFLOW means: close the socket)."""
        return await self._queue.get()

    @property
    def waiting(self) -> int:
        """Frames queued now."""
        return self._queue.qsize()


# A first frame is read before anyone is known: nothing bigger than this is parsed.
AUTH_FRAME_BYTES = 1024
SECRET_CHARS = 256  # tokens and tickets are far shorter; longer is refused unread
UNKNOWN = {
    "token": "the token is unknown, expired or revoked",
    "ticket": "the ticket is unknown, used or expired",
}
AUTH_HINT = 'send {"type": "auth", "token": ...} or {"type": "auth", "ticket": ...} first'


class AuthFrameError(ValueError):
    """A first frame that is not an auth frame; the message is the close reason (no input)."""


def read_auth_frame(message: Mapping[str, Any]) -> tuple[str, str]:
    """The ("token" | "ticket", secret) a first frame carries.

    Raises AuthFrameError, whose message never repeats what the client sent: a mistyped token
    must not end up in a close reason a proxy logs.
    """
    text = message.get("text")
    if not isinstance(text, str):
        raise AuthFrameError("binary frame: " + AUTH_HINT)
    if len(text.encode("utf-8", "surrogatepass")) > AUTH_FRAME_BYTES:
        raise AuthFrameError(f"the auth frame is over {AUTH_FRAME_BYTES} bytes")
    try:
        frame = json.loads(text)
    except ValueError:
        raise AuthFrameError("not JSON: " + AUTH_HINT) from None
    if not isinstance(frame, dict) or frame.get("type") != "auth":
        raise AuthFrameError(AUTH_HINT)
    given = [(kind, frame[kind]) for kind in ("token", "ticket") if kind in frame]
    if len(given) != 1:
        raise AuthFrameError("an auth frame carries one token or one ticket")
    kind, secret = given[0]
    if not (
        isinstance(secret, str)
        and 0 < len(secret) <= SECRET_CHARS
        and secret.isascii()
        and secret.isprintable()
    ):
        raise AuthFrameError(UNKNOWN[kind])
    return kind, secret

"""A real uvicorn server on a free loopback port, and a small chat client for tests."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from websockets.sync.client import ClientConnection, connect

from api.app import create_app
from api.serving import server_config
from api.wiring import Services
from core.config import Settings
from tests.support.postgres import free_port


@contextmanager
def running_server(
    services: Services, extend: Callable[[FastAPI], None] | None = None, **settings: Any
) -> Iterator[str]:
    """Serve the app for `services` under uvicorn in a thread; yield its host:port.

    `settings` are the app's own settings beyond the database (e.g. what runs at startup).
    """
    app_settings = Settings(
        database_url=str(services.engine.url), migrate_on_start=False, **settings
    )
    app = create_app(app_settings, services)
    if extend is not None:
        extend(app)
    port = free_port()
    server = uvicorn.Server(
        server_config(app, app_settings, host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def chat_ticket(address: str, token: str) -> str:
    """A single-use chat ticket, as a browser would get one."""
    request = urllib.request.Request(
        f"http://{address}/api/v1/chat/tickets",
        method="POST",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(json.loads(response.read())["ticket"])


class ChatClient:
    """A websockets client that keeps every frame it received."""

    def __init__(
        self,
        address: str,
        token: str,
        *,
        session: str | None = None,
        use_ticket: bool = False,
        auth_frame: bool = False,
    ) -> None:
        query = f"?ticket={chat_ticket(address, token)}" if use_ticket else ""
        if session:
            query += ("&" if query else "?") + f"session={session}"
        plain = use_ticket or auth_frame
        headers = None if plain else {"Authorization": f"Bearer {token}"}
        self._connect = connect(f"ws://{address}/api/v1/chat{query}", additional_headers=headers)
        self.connection: ClientConnection = self._connect.__enter__()
        if auth_frame:  # the token travels inside the socket, never in its URL or headers
            self.send({"type": "auth", "token": token})
        self.frames: list[dict[str, Any]] = []
        self.session = self.expect(lambda f: f["type"] == "session")

    def send(self, frame: dict[str, Any] | str) -> None:
        self.connection.send(frame if isinstance(frame, str) else json.dumps(frame))

    def say(self, text: str, lang: str | None = None) -> dict[str, Any]:
        """Send a message (with the client's language, if given); return the final reply."""
        frame = {"type": "user_message", "text": text}
        self.send(frame if lang is None else {**frame, "lang": lang})
        return self.expect(lambda f: f["type"] == "assistant_message")

    def expect(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 10
    ) -> dict[str, Any]:
        """Receive until a frame matches (earlier ones are kept in `frames`)."""
        deadline = time.monotonic() + timeout
        for frame in self.frames:
            if match(frame) and not frame.get("_seen"):
                frame["_seen"] = True
                return frame
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching frame; got {[f['type'] for f in self.frames]}")
            received: dict[str, Any] = json.loads(self.connection.recv(timeout=remaining))
            frame = received
            self.frames.append(frame)
            if match(frame):
                frame["_seen"] = True
                return frame

    def card(self, **fields: Any) -> dict[str, Any]:
        """The next card frame whose card has these fields."""
        frame = self.expect(
            lambda f: f["type"] == "card" and all(f["card"].get(k) == v for k, v in fields.items())
        )
        card: dict[str, Any] = frame["card"]
        return card

    def act(self, card_id: str, action: str, comment: str | None = None) -> None:
        self.send({"type": "card_action", "card_id": card_id, "action": action, "comment": comment})

    def close(self) -> None:
        self._connect.__exit__(None, None, None)

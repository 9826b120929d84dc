"""The chat socket's first frame, and hostile handshakes, over a real uvicorn server.

A socket opened without a header or a ticket in its URL authenticates with its first frame,
`{"type": "auth", "token": ...}` or `{"type": "auth", "ticket": ...}`, within
`chat_auth_seconds`; anything else first, or nothing, closes it with 1008 and a reason that
never repeats what was sent. A 10,000-character URL or header line is refused at once with a
4xx, not left hanging.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import World
from tests.support.server import ChatClient, chat_ticket, running_server

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

DEADLINE = 0.5  # the auth deadline of the test server (the default is 5 s)


@pytest.fixture
def server(world: World) -> Iterator[str]:
    # The same wiring with a short auth deadline: share the hub and the identity watch.
    _ = world.services.hub, world.services.watch
    settings = world.services.settings.model_copy(update={"chat_auth_seconds": DEADLINE})
    with running_server(dataclasses.replace(world.services, settings=settings)) as address:
        yield address


def _releases(world: World) -> int:
    with world.services.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM releases")).scalar_one())


def _refused(ws: ClientConnection, within: float = 2.0) -> tuple[int, str, list[Any]]:
    """(close code, reason, frames received) once the server closes; fails if it does not."""
    started = time.monotonic()
    frames: list[Any] = []
    try:
        while True:
            remaining = within - (time.monotonic() - started)
            assert remaining > 0, f"socket still open after {within}s; got {frames}"
            frames.append(json.loads(ws.recv(timeout=remaining)))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "closed without a close frame"
        return closed.rcvd.code, closed.rcvd.reason, frames
    except TimeoutError:
        raise AssertionError(f"socket still open after {within}s; got {frames}") from None


def test_a_token_in_the_first_frame_opens_the_socket(world: World, server: str) -> None:
    alice = ChatClient(server, world.tokens["alice"], auth_frame=True)
    assert alice.session["user"] == "alice"
    assert "shop/prod" in alice.say("list targets")["text"]
    alice.close()


def test_a_ticket_in_the_first_frame_opens_one_socket_once(world: World, server: str) -> None:
    ticket = chat_ticket(server, world.tokens["bob"])
    with connect(f"ws://{server}/api/v1/chat") as ws:
        ws.send(json.dumps({"type": "auth", "ticket": ticket}))
        assert json.loads(ws.recv(timeout=5))["user"] == "bob"
    with connect(f"ws://{server}/api/v1/chat") as ws:
        ws.send(json.dumps({"type": "auth", "ticket": ticket}))
        code, reason, _ = _refused(ws)
    assert code == 1008 and "ticket" in reason and ticket not in reason


def test_a_socket_that_says_nothing_is_closed_at_the_deadline(world: World, server: str) -> None:
    started = time.monotonic()
    with connect(f"ws://{server}/api/v1/chat") as ws:
        code, reason, frames = _refused(ws, within=DEADLINE + 2)
    assert code == 1008 and "auth" in reason
    assert DEADLINE <= time.monotonic() - started < DEADLINE + 2  # not before, not much after
    assert [f["code"] for f in frames] == ["not_authenticated"]


def test_a_message_before_auth_is_refused_and_does_nothing(world: World, server: str) -> None:
    with connect(f"ws://{server}/api/v1/chat") as ws:
        ws.send(json.dumps({"type": "user_message", "text": "deploy web 1.5.0 to dev"}))
        code, reason, frames = _refused(ws)
    assert code == 1008 and "auth" in reason
    assert not any(f.get("type") in ("session", "card", "tool_call") for f in frames)
    assert _releases(world) == 0


TOKEN_10K = "sd_" + "x" * 10_000
HOSTILE_FIRST_FRAMES: list[str | bytes] = [
    json.dumps({"type": "auth", "token": TOKEN_10K}),
    json.dumps({"type": "auth", "token": "🚀" * 3_000}, ensure_ascii=False),
    json.dumps({"type": "auth", "ticket": "🚀" * 3_000}, ensure_ascii=False),
    '{"type": "auth", "token": "sd_\\ud800"}',  # a lone surrogate: valid JSON, no valid text
    '{"type": "auth", "ticket": "\\udfff"}',
    json.dumps({"type": "auth", "token": 12345}),
    json.dumps({"type": "auth", "token": ["sd_a", "sd_b"]}),
    json.dumps({"type": "auth", "token": None}),
    json.dumps({"type": "auth", "ticket": {"id": 1}}),
    json.dumps({"type": "auth", "token": ""}),
    json.dumps({"type": "auth"}),
    json.dumps({"type": "auth", "token": "sd_nope", "ticket": "nope"}),
    json.dumps({"type": ["auth"], "token": "sd_nope"}),
    json.dumps({"type": "AUTH", "token": "sd_nope"}),
    "12345",
    "null",
    '["auth", "sd_nope"]',
    '"auth"',
    "{not json",
    "",
    b"\x00\x01binary \xff",
    json.dumps({"type": "auth", "token": "sd_nope"}).encode(),  # JSON, but a binary frame
]


def test_hostile_first_frames_close_the_socket_with_1008(world: World, server: str) -> None:
    for n, frame in enumerate(HOSTILE_FIRST_FRAMES):  # one server for all: they are quick
        with connect(f"ws://{server}/api/v1/chat", max_size=None) as ws:
            ws.send(frame)
            code, reason, frames = _refused(ws)
        assert code == 1008 and reason, n
        assert "no auth frame within" not in reason, n  # answered, not left to time out
        assert "sd_" not in reason and "🚀" not in reason, n  # what was sent is never echoed
        assert [f["code"] for f in frames] == ["not_authenticated"], n
    alice = ChatClient(server, world.tokens["alice"], auth_frame=True)  # the server carries on
    alice.close()


def test_an_oversized_first_frame_is_refused_before_it_is_read(world: World, server: str) -> None:
    with connect(f"ws://{server}/api/v1/chat", max_size=None) as ws:
        ws.send(json.dumps({"type": "auth", "token": "sd_" + "x" * 100_000}))
        code, _, _ = _refused(ws)
    assert code == 1009
    alice = ChatClient(server, world.tokens["alice"], auth_frame=True)  # the server carries on
    alice.send({"type": "ping"})
    assert alice.expect(lambda f: f["type"] == "pong")
    alice.close()


def _handshake(address: str, target: str, extra: str = "") -> tuple[str, float]:
    """Send a raw WebSocket handshake; (the status line, seconds until it came)."""
    host, port = address.split(":")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(request.encode())
        try:
            answer = raw.recv(4096)
        except TimeoutError:
            return "no answer", time.monotonic() - started
    return answer.split(b"\r\n", 1)[0].decode(errors="replace"), time.monotonic() - started


OVERSIZED_HANDSHAKES = {
    "query-10k": ("/api/v1/chat?ticket=" + "x" * 10_000, ""),
    "emoji-query": ("/api/v1/chat?session=" + "%F0%9F%9A%80" * 2_000, ""),
    "path-10k": ("/api/v1/chat/" + "y" * 10_000, ""),
    "query-100k": ("/api/v1/chat?ticket=" + "z" * 100_000, ""),
    "header-10k": ("/api/v1/chat", "X-Filler: " + "h" * 10_000 + "\r\n"),
    "bearer-10k": ("/api/v1/chat", "Authorization: Bearer sd_" + "t" * 10_000 + "\r\n"),
}


def test_an_oversized_handshake_is_refused_promptly(world: World, server: str) -> None:
    for name, (target, extra) in OVERSIZED_HANDSHAKES.items():
        status, seconds = _handshake(server, target, extra)
        assert status.startswith("HTTP/1.1 4"), (name, status)
        assert seconds < 2, name
    alice = ChatClient(server, world.tokens["alice"])  # and the server carries on
    alice.close()

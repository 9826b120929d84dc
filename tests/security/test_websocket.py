"""The chat WebSocket under malformed and hostile traffic: frame limits, binary, origin, queue.

The memory test runs `shipdeck serve` in its own process and reads its RSS from /proc.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from api.sockets import Outbox, origin_allowed
from tests.cli.test_cli import SHIPDECK
from tests.conftest import World
from tests.support.postgres import free_port
from tests.support.server import ChatClient, running_server
from tests.support.threads import in_fresh_thread

MiB = 1024 * 1024
OVERSIZED_FRAMES = 20
# What the server may grow by (peak RSS) while 20 frames of 15 MiB arrive. Without ws_max_size
# uvicorn buffers each message whole before the app sees it: ~15-30 MiB per frame, hundreds of
# MiB in total; with it, frames are refused from their header.
RSS_GROWTH_BOUND = 24 * MiB


@pytest.fixture
def server(world: World) -> Iterator[str]:
    with running_server(world.services) as address:
        yield address


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_binary_frame_gets_an_error_frame_and_the_socket_lives(world: World, server: str) -> None:
    alice = ChatClient(server, world.tokens["alice"])
    alice.connection.send(b"\x00\x01binary \xff")
    error = alice.expect(lambda f: f["type"] == "error")
    assert error["code"] == "binary_frame"
    alice.send({"type": "ping"})
    assert alice.expect(lambda f: f["type"] == "pong")
    alice.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_frame_over_the_limit_closes_with_1009_before_it_is_read(world: World, server: str) -> None:
    alice = ChatClient(server, world.tokens["alice"])
    alice.send('{"type": "user_message", "text": "' + "x" * 20_000 + '"}')
    with pytest.raises(ConnectionClosed) as closed:
        alice.connection.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    # The server carries on for everyone else.
    again = ChatClient(server, world.tokens["alice"])
    again.send({"type": "ping"})
    assert again.expect(lambda f: f["type"] == "pong")
    again.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_foreign_origin_is_refused_at_the_handshake(world: World, server: str) -> None:
    url = f"ws://{server}/api/v1/chat"
    auth = {"Authorization": f"Bearer {world.tokens['alice']}"}
    with pytest.raises(InvalidStatus) as refused:
        connect(url, origin=Origin("http://evil.example"), additional_headers=auth)
    assert refused.value.response.status_code == 403
    with connect(url, origin=Origin(f"http://{server}"), additional_headers=auth) as same:
        assert '"session"' in str(same.recv(timeout=10))


def test_origin_rule() -> None:
    allowed = ["https://deploy.example.com"]
    assert origin_allowed(None, "localhost:8000", allowed)  # not a browser
    assert origin_allowed("http://localhost:8000", "localhost:8000", allowed)
    assert origin_allowed("https://deploy.example.com/", "10.0.0.5:8000", allowed)
    assert not origin_allowed("http://localhost:8001", "localhost:8000", allowed)
    assert not origin_allowed("http://evil.example", "localhost:8000", allowed)
    assert not origin_allowed("null", "localhost:8000", allowed)
    assert not origin_allowed("file://localhost:8000", "localhost:8000", allowed)
    assert not origin_allowed("http://localhost:8000", None, [])


def test_outgoing_queue_is_bounded() -> None:
    """A client that never reads: the queue stops at its limit and asks for a close."""

    async def scenario() -> tuple[int, dict[str, object]]:
        outbox = Outbox(asyncio.get_running_loop(), limit=50)
        for n in range(10_000):
            outbox.offer({"type": "assistant_delta", "text": str(n)})
        return outbox.waiting, await outbox.next()

    # a thread of its own: no event loop another test left behind can get in the way
    waiting, first = in_fresh_thread(lambda: asyncio.run(scenario()))
    assert waiting == 1 and first is Outbox.OVERFLOW


def _rss(pid: int) -> tuple[int, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.MULTILINE))
    return int(fields["VmRSS"]) * 1024, int(fields["VmHWM"]) * 1024


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """`shipdeck serve --demo` in its own process: (process, address, a token)."""
    assert SHIPDECK
    port = free_port()
    env = {
        **os.environ,
        "SHIPDECK_DATABASE_URL": f"sqlite:///{tmp_path / 'rss.db'}",
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), *sys.path]),
    }
    process = subprocess.Popen(
        [SHIPDECK, "serve", "--demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        assert process.stdout is not None
        while not any("serving on" in line for line in lines):
            line = process.stdout.readline()
            assert line, "server exited: " + "".join(lines)
            lines.append(line)
        token = re.findall(r"^\s+alice\s.*?(sd_\S+)$", "".join(lines), re.MULTILINE)[0]
        yield process, f"127.0.0.1:{port}", token
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_oversized_frames_do_not_drive_server_memory_up(
    served: tuple[subprocess.Popen[str], str, str],
) -> None:
    process, address, token = served
    deadline = time.monotonic() + 20
    while True:  # the socket answers once uvicorn is up
        try:
            client = ChatClient(address, token)
            break
        except OSError:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
    client.send({"type": "ping"})
    client.expect(lambda f: f["type"] == "pong")
    client.close()
    before, _ = _rss(process.pid)
    payload = '{"type": "user_message", "text": "' + "x" * (15 * MiB) + '"}'

    def attack(_: int) -> int | None:
        client = ChatClient(address, token)
        try:
            client.connection.send(payload)
            client.connection.recv(timeout=60)
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
        except OSError:  # the server closed while the frame was still being written
            return None
        finally:
            client.close()
        return -1  # the server read the frame and answered it

    with ThreadPoolExecutor(max_workers=OVERSIZED_FRAMES) as pool:  # all at once, as an attacker
        closed_with = list(pool.map(attack, range(OVERSIZED_FRAMES)))
    _, peak = _rss(process.pid)
    assert peak - before < RSS_GROWTH_BOUND, f"RSS {before / MiB:.0f} -> peak {peak / MiB:.0f} MiB"
    # Uncompressed (the socket offers no permessage-deflate), the client is still writing its
    # 15 MiB when the server closes on the frame header: it may read the 1009 or only see the
    # connection cut. Either way nothing was answered, and the server still serves.
    assert set(closed_with) <= {1009, None}, closed_with
    fresh = ChatClient(address, token)
    fresh.send({"type": "ping"})
    fresh.expect(lambda f: f["type"] == "pong")
    fresh.close()

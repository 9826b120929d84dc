"""The audit webhook sink: one delivery per event however many replicas stream, and
`shipdeck serve` streaming in-process when asked to; a real HTTP receiver on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app
from api.wiring import Services
from core.audit.sink import SIGNATURE_HEADER, stream
from core.config import Settings, get_settings
from tests.conftest import WORLD, World
from tests.support.calls import approved_dev, call
from tests.support.server import running_server

SECRET = "s" * 32


class Receiver:
    """A SIEM's webhook: keeps every event; can hold the first POST until a second arrives."""

    def __init__(self, hold_first: bool = False) -> None:
        self.seqs: list[int] = []
        self.bad_signatures = 0
        self.posts = 0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.second_post = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.posts += 1
                    first = receiver.posts == 1
                    if not first:
                        receiver.second_post.set()
                if first and hold_first:  # a slow receiver: would a second replica post too?
                    receiver.second_post.wait(timeout=1)
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                with receiver.changed:
                    if self.headers[SIGNATURE_HEADER] != expected:
                        receiver.bad_signatures += 1
                    receiver.seqs.extend(int(e["seq"]) for e in json.loads(body)["events"])
                    receiver.changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/audit"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, seq: int, timeout: float = 30) -> None:
        """Until an event with `seq` (or later) has arrived."""
        with self.changed:
            arrived = self.changed.wait_for(lambda: max(self.seqs, default=0) >= seq, timeout)
        assert arrived, f"the receiver got {sorted(self.seqs)[-5:]}, waited for {seq}"


def _history(world: World) -> int:
    """Some audited work; the chain's last seq."""
    for n in range(4):
        call(world, "alice", "apply_release", release_id=approved_dev(world, f"7.{n}.0"))
    return int(call(world, "admin", "verify_audit").last_seq)


@pytest.fixture
def replica(world: World) -> Iterator[Services]:
    """A second replica: its own engine and sessions on the same database."""
    other = Services.build(Settings(database_url=str(world.services.engine.url)))
    yield other
    other.close()


def test_two_replicas_deliver_each_event_once(world: World, replica: Services) -> None:
    last = _history(world)
    stop = threading.Event()
    with Receiver(hold_first=True) as receiver:
        threads = [
            threading.Thread(
                target=stream,
                kwargs={
                    "sessions": services.sessions,
                    "url": receiver.url,
                    "secret": SECRET.encode(),
                    "stop": stop,
                    "batch": 5,
                },
            )
            for services in (world.services, replica)
        ]
        for thread in threads:
            thread.start()
        try:
            receiver.wait_for(last)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert sorted(receiver.seqs) == list(range(1, last + 1)), "an event went twice or not at all"
    assert receiver.bad_signatures == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_streams_the_chain_in_process_when_asked(world: World) -> None:
    with Receiver() as receiver:
        with running_server(
            world.services,
            audit_webhook_url=receiver.url,
            audit_webhook_secret=SECRET,
            audit_stream_in_serve=True,
        ):
            last = _history(world)
            receiver.wait_for(last)
    assert sorted(receiver.seqs) == list(range(1, last + 1))
    assert receiver.bad_signatures == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_refuses_to_start_streaming_without_a_url_and_secret(world: World) -> None:
    settings = Settings(
        database_url=str(world.services.engine.url),
        migrate_on_start=False,
        audit_stream_in_serve=True,
    )
    with pytest.raises(RuntimeError, match="SHIPDECK_AUDIT_WEBHOOK_URL"):
        with TestClient(create_app(settings, world.services)):
            pass


def test_audit_stream_once_delivers_what_is_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = tmp_path / "world.yaml"
    world.write_text(WORLD)
    monkeypatch.setenv("SHIPDECK_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("SHIPDECK_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SHIPDECK_AUDIT_KEY", raising=False)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        assert runner.invoke(app, ["load", str(world)]).exit_code == 0
        with Receiver() as receiver:
            monkeypatch.setenv("SHIPDECK_AUDIT_WEBHOOK_URL", receiver.url)
            monkeypatch.setenv("SHIPDECK_AUDIT_WEBHOOK_SECRET", SECRET)
            get_settings.cache_clear()
            streamed = runner.invoke(app, ["audit", "stream", "--once"])
    finally:
        get_settings.cache_clear()
    assert streamed.exit_code == 0, streamed.output
    assert json.loads(streamed.output.splitlines()[0])["status"] == "delivered"
    assert receiver.seqs and sorted(receiver.seqs) == list(range(1, max(receiver.seqs) + 1))
    assert receiver.bad_signatures == 0

"""How the compose adapter reads the engine: one snapshot per look, windows timed by the engine."""

from __future__ import annotations

import http.server
import json
import os
import socketserver
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runtimes.docker_engine import Engine, EngineUnreachable, box
from tests.runtimes.conftest import ComposeTarget
from tests.support.calls import call, deploy

pytestmark = pytest.mark.docker

SERVICE = "com.docker.compose.service"


@pytest.fixture
def ssh_to_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `ssh` first on PATH that reaches this machine's engine as the far end would.

    The SDK's ssh transport runs `ssh [-l user] -- host docker system dial-stdio` and speaks
    HTTP over its stdio: faked at that process boundary, everything above it is real.
    """
    return _noting_shim(tmp_path / "ssh-bin", "ssh", "docker system dial-stdio", monkeypatch)


def _noting_shim(folder: Path, name: str, then: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a `name` first on PATH that notes its arguments in the returned file, then runs
    `then` (the process boundary the adapter crosses)."""
    calls = folder / "calls"
    shim = folder / name
    folder.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {then}\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return calls


def _engine(over: str) -> Engine:
    return Engine("ssh://deploy@build-host:2222" if over == "ssh" else None)


def _worker(target: ComposeTarget, engine: Engine) -> dict[str, object]:
    label = f"com.docker.compose.project={target.project}"
    found = [d for d in engine.containers(label) if box(d, SERVICE).service == "worker"]
    assert len(found) == 1
    return found[0]


def test_the_socket_and_ssh_read_the_same_snapshot(
    compose_target: ComposeTarget, ssh_to_here: Path
) -> None:
    over_socket, over_ssh = _engine("socket"), _engine("ssh")
    assert over_socket.host.startswith("unix://") and over_ssh.host.startswith("ssh://")
    label = f"com.docker.compose.project={compose_target.project}"
    seen = [
        sorted((box(d, SERVICE) for d in e.containers(label)), key=lambda b: b.service)
        for e in (over_socket, over_ssh)
    ]
    assert seen[0] == seen[1]
    assert [(b.service, b.image, b.running) for b in seen[0]] == [
        ("web", "demo/web:1", True),
        ("worker", "demo/worker:1", True),
    ]
    web, worker = seen[0]
    assert web.health == "healthy" and worker.health is None
    assert "QUEUE=jobs" in worker.env and worker.started_at is not None
    assert over_socket.containers("com.docker.compose.project=nobody-has-this") == []
    # the image's own env, and nothing for an image the engine does not have
    assert over_ssh.image_env(web.image_id) == over_socket.image_env(web.image_id)
    assert over_socket.image_env("sha256:" + "0" * 64) is None
    # the system ssh with the target's user, port and host: no key handling of our own
    assert "-l deploy -p 2222 -- build-host docker system dial-stdio" in ssh_to_here.read_text()
    over_socket.close()
    over_ssh.close()


def test_an_engine_that_does_not_answer_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    now = datetime.now(UTC)
    for engine in (Engine(None), Engine("tcp://127.0.0.1:1")):
        with pytest.raises(EngineUnreachable):
            engine.containers("com.docker.compose.project=shop")
        with pytest.raises(EngineUnreachable):
            engine.stopping_events(["x"], now, now)
        with pytest.raises(EngineUnreachable):
            engine.image_env("sha256:" + "0" * 64)


def test_tls_comes_from_the_environment_as_with_the_docker_cli(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # DOCKER_TLS_VERIFY/DOCKER_CERT_PATH apply to a tcp:// host; missing key files are a
    # clear "unreachable", not a crash of whoever asked
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path / ("certs-" + "\U0001f433" * 3)))
    engine = Engine("tcp://127.0.0.1:1")
    with pytest.raises(EngineUnreachable, match="cert"):
        engine.containers("com.docker.compose.project=shop")


@pytest.mark.parametrize("over", ["socket", "ssh"])
def test_a_quiet_window_ends_on_time_and_a_stop_inside_it_is_seen(
    compose_target: ComposeTarget, ssh_to_here: Path, over: str
) -> None:
    engine = _engine(over)
    worker = box(_worker(compose_target, engine), SERVICE)
    assert worker.started_at is not None
    end = datetime.now(UTC) + timedelta(seconds=0.4)
    assert engine.stopping_events([worker.id], worker.started_at, end) == []
    # the engine waited it out, to the sub-second (not rounded to a whole second either way)
    assert end - timedelta(seconds=0.05) <= datetime.now(UTC) < end + timedelta(seconds=0.5)
    compose_target.client().container.kill(worker.id)
    # A window reaching an hour ahead still answers at once: the stop is in its past.
    started = time.monotonic()
    far = worker.started_at + timedelta(hours=1)
    stopped = engine.stopping_events([worker.id], worker.started_at, far)
    assert stopped and stopped[0] in ("kill", "die")
    assert time.monotonic() - started < 10
    engine.close()


def test_a_release_reads_the_engine_without_a_docker_process_per_container(
    compose_target: ComposeTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A `docker` first on PATH that notes each run and hands over to the real one: what the
    # adapter starts, counted at the process boundary. Before one snapshot per look, a
    # preview + apply of one service started ~20 `container inspect`/`ls` processes.
    real = next(
        Path(d) / "docker"
        for d in os.environ["PATH"].split(os.pathsep)
        if (Path(d) / "docker").is_file()
    )
    calls = _noting_shim(tmp_path / "bin", "docker", f'{real} "$@"', monkeypatch)
    release = deploy(compose_target.world, "alice", "shop", "staging", worker={"image_tag": "2"})
    call(compose_target.world, "alice", "submit_release", release_id=release.id)
    call(compose_target.world, "alice", "apply_release", release_id=release.id)
    state = call(compose_target.world, "alice", "get_release", release_id=release.id)
    assert state.lifecycle_state == "applied"
    ran = calls.read_text().splitlines() if calls.exists() else []
    reads = [line for line in ran if {"inspect", "ls", "list"} & set(line.split())]
    assert reads == [], ran
    assert len([line for line in ran if " up " in f" {line} "]) == 1, ran


class _StalledEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """An engine on a unix socket that answers its version, then never ends an event stream."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.released = threading.Event()
        super().__init__(path, self._Handler)

    class _Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            server = self.server
            assert isinstance(server, _StalledEngine)
            if self.path.endswith("/version"):
                body = json.dumps({"ApiVersion": "1.41", "Version": "20.10"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(200)  # the events stream: headers, then nothing at all
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            server.released.wait(30)

        def log_message(self, format: str, *args: object) -> None:
            pass

        def address_string(self) -> str:  # a unix socket has no (host, port)
            return "engine"


def test_an_engine_that_stops_answering_ends_the_window_as_unreachable(tmp_path: Path) -> None:
    # The SDK reads events without a timeout: without a watchdog this would wait forever.
    path = str(tmp_path / "docker.sock")
    with _StalledEngine(path) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        engine = Engine(f"unix://{path}", stall_seconds=0.5)
        now = datetime.now(UTC)
        started = time.monotonic()
        with pytest.raises(EngineUnreachable, match="did not end 0.5 s after the window"):
            engine.stopping_events(["c0ffee"], now - timedelta(seconds=1), now)
        assert time.monotonic() - started < 10
        server.released.set()
        server.shutdown()
        engine.close()

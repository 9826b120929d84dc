"""How the compose adapter reads the engine: one snapshot per look, windows timed by the engine."""

from __future__ import annotations

import os
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runtimes.docker_engine import Engine, box
from tests.runtimes.conftest import ComposeTarget
from tests.support.calls import call, deploy

pytestmark = pytest.mark.docker

SERVICE = "com.docker.compose.service"


def _engine(target: ComposeTarget, use_socket: bool) -> Engine:
    command = [str(part) for part in target.client().client_config.docker_cmd]
    return Engine(None, command, use_socket=use_socket)


def _worker(target: ComposeTarget, engine: Engine) -> dict[str, object]:
    label = f"com.docker.compose.project={target.project}"
    found = [d for d in engine.containers(label) if box(d, SERVICE).service == "worker"]
    assert len(found) == 1
    return found[0]


def test_the_socket_and_the_cli_read_the_same_snapshot(compose_target: ComposeTarget) -> None:
    over_socket, over_cli = _engine(compose_target, True), _engine(compose_target, False)
    assert over_socket.socket is not None and over_cli.socket is None
    label = f"com.docker.compose.project={compose_target.project}"
    seen = [
        sorted((box(d, SERVICE) for d in e.containers(label)), key=lambda b: b.service)
        for e in (over_socket, over_cli)
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
    over_socket.close()


@pytest.mark.parametrize("use_socket", [True, False], ids=["socket", "cli"])
def test_a_quiet_window_ends_on_time_and_a_stop_inside_it_is_seen(
    compose_target: ComposeTarget, use_socket: bool
) -> None:
    engine = _engine(compose_target, use_socket)
    worker = box(_worker(compose_target, engine), SERVICE)
    assert worker.started_at is not None
    end = datetime.now(UTC) + timedelta(seconds=0.4)
    assert engine.stopping_events([worker.id], worker.started_at, end) == []
    assert datetime.now(UTC) >= end - timedelta(seconds=0.05)  # the engine waited it out
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
    calls = tmp_path / "calls"
    shim = tmp_path / "bin" / "docker"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {real} "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    release = deploy(compose_target.world, "alice", "shop", "staging", worker={"image_tag": "2"})
    call(compose_target.world, "alice", "submit_release", release_id=release.id)
    call(compose_target.world, "alice", "apply_release", release_id=release.id)
    state = call(compose_target.world, "alice", "get_release", release_id=release.id)
    assert state.lifecycle_state == "applied"
    ran = calls.read_text().splitlines() if calls.exists() else []
    reads = [line for line in ran if {"inspect", "ls", "list"} & set(line.split())]
    assert reads == [], ran
    assert len([line for line in ran if " up " in f" {line} "]) == 1, ran

"""kill -9 the server during a compose apply, start it again: one rollout, nothing stuck."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.runtimes.conftest import ComposeTarget, wait_until
from tests.support.calls import call, deploy
from tests.support.postgres import free_port

SHIPDECK = shutil.which("shipdeck", path=str(Path(sys.executable).parent))


def _serve(target: ComposeTarget, port: int, log: Path) -> subprocess.Popen[bytes]:
    assert SHIPDECK
    env = {
        **os.environ,
        "SHIPDECK_DATABASE_URL": str(target.world.services.engine.url),
        "SHIPDECK_APPLY_LEASE_SECONDS": "3",
        "SHIPDECK_SWEEP_INTERVAL_SECONDS": "0.5",
        "SHIPDECK_PLANNER": "rules",
    }
    process = subprocess.Popen(
        [SHIPDECK, "serve", "--port", str(port)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    wait_until(lambda: _healthy(port) or process.poll() is not None, timeout=120)
    assert process.poll() is None, log.read_text()[-2000:]
    return process


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _web_creates(target: ComposeTarget, since: datetime) -> list[str]:
    """Containers the engine created for the web service since `since`."""
    out = subprocess.run(
        [
            "docker",
            "events",
            "--since",
            since.isoformat(),
            "--until",
            datetime.now(UTC).isoformat(),
            "--filter",
            "type=container",
            "--filter",
            "event=create",
            "--filter",
            f"label=com.docker.compose.project={target.project}",
            "--filter",
            "label=com.docker.compose.service=web",
            "--format",
            "{{.Actor.Attributes.image}}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.split()


def test_a_server_killed_mid_apply_resumes_and_rolls_out_once(
    compose_target: ComposeTarget, tmp_path: Path
) -> None:
    world = compose_target.world
    release = deploy(world, "alice", "shop", "staging", web={"image_tag": "2"})

    def timeline() -> Any:
        return call(world, "alice", "release_timeline", release_id=release.id)

    def state() -> Any:
        return call(world, "alice", "get_release", release_id=release.id)

    call(world, "alice", "submit_release", release_id=release.id)
    since = datetime.now(UTC)
    log = tmp_path / "server.log"
    port = free_port()
    first = _serve(compose_target, port, log)
    try:
        response = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/releases/{release.id}/apply",
            headers={"Authorization": f"Bearer {world.tokens['alice']}"},
            timeout=30,
        )
        assert response.status_code in (200, 202), response.text
        # the rollout has begun in the runtime when the server dies
        wait_until(lambda: any(e.kind == "progress" for e in timeline().entries), timeout=30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert call(world, "alice", "get_release", release_id=release.id).lifecycle_state == "applying"
    second = _serve(compose_target, port, log)
    try:
        wait_until(lambda: state().lifecycle_state in ("applied", "failed"), timeout=90)
        assert state().lifecycle_state == "applied", log.read_text()[-3000:]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert compose_target.running()["web"] == ["demo/web:2"]
    assert _web_creates(compose_target, since) == ["demo/web:2"]  # one rollout, not two
    status = call(world, "alice", "target_status", project="shop", environment="staging")
    assert status.active_release is None  # the target is free
    verdict = call(world, "admin", "verify_audit")
    assert verdict.ok, verdict.reason
    actions = [e.action for e in timeline().entries if e.kind == "audit"]
    assert actions.count("apply") == 1 and actions.count("applied") == 1

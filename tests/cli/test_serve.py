"""`shipdeck serve --demo` (what `make run` starts), as a real process."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx2 as httpx

from tests.cli.test_cli import SHIPDECK
from tests.support.postgres import free_port


def test_demo_server_prints_tokens_that_work(tmp_path: Path) -> None:
    assert SHIPDECK
    port = free_port()
    env = {**os.environ, "SHIPDECK_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
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
        tokens = dict(re.findall(r"^\s+(\w+)\s.*?(sd_\S+)$", "".join(lines), re.MULTILINE))
        assert set(tokens) == {"alice", "bob", "carol", "victor", "admin"}
        assert f"http://127.0.0.1:{port}" in "".join(lines)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        targets = httpx.get(
            f"{base}/api/v1/targets", headers={"Authorization": f"Bearer {tokens['alice']}"}
        ).json()["items"]
        assert [(t["environment"], t["simulated"]) for t in targets] == [
            ("dev", True),
            ("staging", True),
            ("prod", True),
        ]
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_llm_planner_without_an_endpoint_is_refused_at_start(tmp_path: Path) -> None:
    assert SHIPDECK
    env = {
        **os.environ,
        "SHIPDECK_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "SHIPDECK_PLANNER": "llm",
    }
    env.pop("SHIPDECK_LLM_BASE_URL", None)
    result = subprocess.run(
        [SHIPDECK, "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "SHIPDECK_LLM_BASE_URL" in result.stderr

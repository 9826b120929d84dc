"""`make run` twice in a row: the demo keeps its tokens and they still work after a restart."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx

from tests.cli.test_cli import SHIPDECK
from tests.support.postgres import free_port


def start_demo(db: Path, port: int) -> tuple[subprocess.Popen[str], str]:
    assert SHIPDECK
    env = {**os.environ, "SHIPDECK_DATABASE_URL": f"sqlite:///{db}"}
    process = subprocess.Popen(
        [SHIPDECK, "serve", "--demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    while not any("serving on" in line for line in lines):
        line = process.stdout.readline()
        assert line, "server exited: " + "".join(lines)
        lines.append(line)
    return process, "".join(lines)


def test_a_restarted_demo_prints_the_same_working_tokens(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    first, printed = start_demo(db, free_port())
    first.terminate()
    first.wait(timeout=20)
    tokens = dict(re.findall(r"^\s+(\w+)\s.*?(sd_\S+)$", printed, re.MULTILINE))
    assert set(tokens) == {"alice", "bob", "carol", "victor", "admin"}
    assert f"kept across restarts in {tmp_path / 'demo-tokens.json'}" in printed
    assert oct((tmp_path / "demo-tokens.json").stat().st_mode & 0o777) == "0o600"
    port = free_port()
    second, again = start_demo(db, port)
    try:
        assert dict(re.findall(r"^\s+(\w+)\s.*?(sd_\S+)$", again, re.MULTILINE)) == tokens
        assert f"SHIPDECK_URL=http://127.0.0.1:{port}" in again
        me = None
        for _ in range(200):  # the port is bound a moment after the banner
            try:
                me = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/me",
                    headers={"Authorization": f"Bearer {tokens['bob']}"},
                    timeout=5,
                )
                break
            except httpx.TransportError:
                second.poll()
                assert second.returncode is None
                time.sleep(0.05)
        assert me is not None and me.status_code == 200 and me.json()["name"] == "bob"
    finally:
        second.terminate()
        second.wait(timeout=20)

"""`shipdeck serve --demo` (what `make run` starts), as a real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
from websockets.sync.client import connect

from tests.cli.test_cli import SHIPDECK
from tests.conftest import service_unavailable
from tests.security.test_socket_auth import _handshake
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


def test_workers_are_refused_on_sqlite_with_a_reason(tmp_path: Path) -> None:
    assert SHIPDECK
    env = {**os.environ, "SHIPDECK_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}"}
    result = subprocess.run(
        [SHIPDECK, "serve", "--port", "1", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "--workers needs PostgreSQL" in result.stderr
    assert not (tmp_path / "w.db").exists()  # refused before touching anything


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def test_two_workers_on_postgresql_serve_the_same_database(postgres_url: str | None) -> None:
    if postgres_url is None:
        service_unavailable("PostgreSQL is not available")
    assert SHIPDECK and postgres_url
    port = free_port()
    env = {**os.environ, "SHIPDECK_DATABASE_URL": postgres_url}
    added = subprocess.run(
        [SHIPDECK, "users", "add", "wendy", "--role", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    token = added.stdout.strip().splitlines()[-1]
    scraper = "scrape-" + "w" * 24
    metric_dirs = set(Path(tempfile.gettempdir()).glob("shipdeck-metrics-*"))
    process = subprocess.Popen(
        [SHIPDECK, "serve", "--port", str(port), "--workers", "2"],
        env={**env, "SHIPDECK_METRICS_TOKEN": scraper},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "workers did not start"
                time.sleep(0.1)
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=auth) as client:
            assert all(client.get("/api/v1/me").json()["name"] == "wendy" for _ in range(10))
        workers: set[int] = set()
        while len(workers) < 2 and time.monotonic() < deadline:
            workers = {p for p in _children(process.pid) if "spawn" in _cmdline(p)}
            time.sleep(0.1)
        assert len(workers) == 2, workers
        # Requests on fresh connections land on either worker; a scrape of any worker counts
        # them all (one worker's count alone would fall short of 50).
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda _: httpx.get(f"{base}/api/v1/me", headers=auth), range(40))
            )
        assert [a.status_code for a in answers] == [200] * 40
        # Each worker's chat socket is set as one process's is (`socket_options`): an
        # oversized handshake is answered at once, and frames are not compressed.
        for _ in range(4):  # fresh connections, on either worker
            status, seconds = _handshake(
                f"127.0.0.1:{port}", "/api/v1/chat", "X-Filler: " + "h" * 10_000 + "\r\n"
            )
            assert status.startswith("HTTP/1.1 4") and seconds < 2, (status, seconds)
            with connect(f"ws://127.0.0.1:{port}/api/v1/chat", additional_headers=auth) as ws:
                assert json.loads(ws.recv())["type"] == "session"
                assert ws.response is not None
                assert "Sec-WebSocket-Extensions" not in ws.response.headers
        me = 'shipdeck_http_requests_total{method="GET",route="/api/v1/me",status="200"} 50.0'
        for _ in range(8):
            scraped = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {scraper}"})
            assert scraped.status_code == 200 and me in scraped.text.splitlines(), scraped.text
    finally:
        process.terminate()
        process.wait(timeout=30)
    # the workers' metric files went with them
    assert set(Path(tempfile.gettempdir()).glob("shipdeck-metrics-*")) == metric_dirs


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_settings_that_do_not_validate_are_one_clear_line_that_echoes_no_value(
    tmp_path: Path,
) -> None:
    assert SHIPDECK
    secret = "sekrit-🚀" * 1000  # 10,000 characters, emoji included: a wrong value, not shown
    env = {
        **os.environ,
        "SHIPDECK_DATABASE_URL": f"sqlite:///{tmp_path / 'bad.db'}",
        "SHIPDECK_DB_CALL_THREADS": secret,
        "SHIPDECK_SQLITE_READ_THREADS": "0",
    }
    done = subprocess.run(
        [SHIPDECK, "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "SHIPDECK_DB_CALL_THREADS: Input should be a valid integer" in lines[0]
    assert "SHIPDECK_SQLITE_READ_THREADS: Input should be greater than or equal to 1" in lines[0]
    assert "sekrit" not in done.stderr

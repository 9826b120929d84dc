"""Servers and databases for the benchmarks: each server in its own process, never the client's."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx2 as httpx
from sqlalchemy import Engine, text

from tests.support.postgres import free_port, throwaway_cluster

ROOT = Path(__file__).resolve().parent.parent
_PIDS: dict[str, int] = {}  # base URL -> the process serving it (see `server_pid`)


def _wait_ready(child: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"server exited with {child.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # a child process starting up: nothing to wait on but its port
    raise RuntimeError(f"{url} did not answer")


@contextmanager
def process(
    args: list[str], url: str, ready: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """Run `python args PORT` on database `url`; yield its base URL once `ready` answers 200."""
    port = free_port()
    environment = dict(os.environ, PYTHONPATH=str(ROOT), SHIPDECK_DATABASE_URL=url)
    environment.update(SHIPDECK_HOST="127.0.0.1", SHIPDECK_PORT=str(port))
    environment.update(SHIPDECK_PLANNER="rules", **(env or {}))
    # BENCH_LOGS=DIR keeps each server's output (to see what a 5xx was), else it is dropped
    logs = os.environ.get("BENCH_LOGS")
    sink = open(Path(logs) / f"server-{port}.log", "wb") if logs else subprocess.DEVNULL  # noqa: SIM115
    child = subprocess.Popen(
        [sys.executable, *args, str(port)],
        env=environment,
        cwd=ROOT,
        stdout=sink,
        stderr=subprocess.STDOUT if logs else subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    _PIDS[base] = child.pid
    try:
        _wait_ready(child, base + ready)
        yield base
    finally:
        _PIDS.pop(base, None)
        child.terminate()
        child.wait(timeout=30)
        if not isinstance(sink, int):
            sink.close()


def server_pid(base: str) -> int:
    """The pid of the process serving `base` (a supervisor, with `--workers N`)."""
    return _PIDS[base]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) so far of process `pid` and every process under it."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
    return total


def served(
    url: str, workers: int = 1, env: dict[str, str] | None = None
) -> AbstractContextManager[str]:
    """`shipdeck serve` in its own process (a supervisor and N worker processes if N > 1)."""
    command = ["-c", "from api.cli import app; app()", "serve", "--workers", str(workers)]
    return process([*command, "--port"], url, "/healthz", env)


def one_row(engine: Engine, number: int) -> dict[str, object]:
    """The bare baselines' floor: one release row by primary key."""
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT number, lifecycle_state FROM releases WHERE number = :n"), {"n": number}
        ).one()
    return {"number": row.number, "lifecycle_state": row.lifecycle_state}


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A throwaway PostgreSQL cluster, or a SQLite file in a temporary folder."""
    if kind == "postgresql":
        with throwaway_cluster() as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="shipdeck-bench-") as folder:
        yield f"sqlite:///{Path(folder) / 'bench.db'}"

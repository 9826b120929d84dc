"""The benchmark scripts stay runnable: each one imports (they run by hand, not in CI), and
the arithmetic their tables rest on holds."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.load import Result, merged, rate
from benchmarks.serving import cpu_seconds

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_imports(name: str) -> None:
    importlib.import_module(f"benchmarks.{name}")


# A grandchild burns 0.3 s of CPU, says its pid and CPU, then waits for its stdin to close.
BURN = (
    "import os, sys, time\n"
    "end = time.process_time() + 0.3\n"
    "while time.process_time() < end: pass\n"
    "print(os.getpid(), time.process_time(), flush=True)\n"
    "sys.stdin.read()"
)
# Its parent: a supervisor whose worker does the work, as `shipdeck serve --workers N`'s does.
SUPERVISOR = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {BURN!r}])"


def test_a_servers_cpu_counts_the_processes_under_it() -> None:
    """`cpu_seconds` reads a process's own CPU right, and a supervisor's includes its
    workers' (load.py's `cpu ms` column)."""
    supervisor = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert supervisor.stdout is not None
        pid, burnt = supervisor.stdout.readline().split()
        worker = cpu_seconds(int(pid))
        # /proc counts in ticks (10 ms), user and system time each rounded down
        assert abs(worker - float(burnt)) <= 0.03, (worker, burnt)
        # the supervisor's own start-up is well under the worker's burn: without the walk
        # over its children it could not reach it
        assert worker <= cpu_seconds(supervisor.pid) <= worker + 2
    finally:
        supervisor.communicate("")
    assert cpu_seconds(supervisor.pid) == 0.0  # gone: nothing to count, no error


def test_a_cells_rounds_add_up() -> None:
    """load.py's rounds of one cell read as one run: requests, statuses, time and CPU summed."""
    first: Result = {
        "latencies": [1.0, 2.0],
        "statuses": {"200": 2},
        "errors": 0,
        "elapsed": 1.0,
        "cpu": 0.5,
    }
    second: Result = {
        "latencies": [3.0],
        "statuses": {"200": 1, "409": 1},
        "errors": 1,
        "elapsed": 2.0,
        "cpu": 0.25,
    }
    both = merged([first, second])
    assert both == {
        "latencies": [1.0, 2.0, 3.0],
        "statuses": {"200": 3, "409": 1},
        "errors": 1,
        "elapsed": 3.0,
        "cpu": 0.75,
    }
    assert rate(both) == 1.0

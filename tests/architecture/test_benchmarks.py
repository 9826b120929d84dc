"""The benchmark scripts stay runnable: each one imports (they run by hand, not in CI), and
the arithmetic their tables rest on holds."""

from __future__ import annotations

import importlib
import os
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


def test_a_servers_cpu_counts_the_processes_under_it() -> None:
    """`cpu_seconds` of a supervisor includes its workers' CPU (load.py's `cpu ms` column)."""
    burn = (
        "import sys, time\n"
        "end = time.process_time() + 0.3\n"
        "while time.process_time() < end: pass\n"
        "print('burnt', flush=True)\n"
        "sys.stdin.read()"
    )
    before = cpu_seconds(os.getpid())
    child = subprocess.Popen(
        [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "burnt\n"
        assert cpu_seconds(os.getpid()) - before >= 0.3  # the child's burn, while it lives
        assert cpu_seconds(child.pid) >= 0.3
    finally:
        child.communicate("")
    assert cpu_seconds(child.pid) == 0.0  # gone: nothing to count, no error


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

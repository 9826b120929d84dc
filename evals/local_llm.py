"""Run `shipdeck eval --planner llm` on both splits against a local model (`make eval-llm`).

With `--server` and `--model`, starts llama.cpp's `llama-server` on a free loopback port (one
thread: on a busy 2-core machine two threads were 8x slower), waits for its /health, runs the
evals and stops it. Without them, uses SHIPDECK_LLM_BASE_URL / SHIPDECK_LLM_MODEL as set.
Not part of CI: tens of minutes cold on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

DATASETS = Path(__file__).resolve().parent / "datasets"
SPLITS = ("tune", "heldout")
SHIPDECK = shutil.which("shipdeck", path=str(Path(sys.executable).parent)) or "shipdeck"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def llama_server(binary: Path, model: Path, threads: int, ready_seconds: float) -> Iterator[str]:
    """llama-server for `model` on a free port; yields its base URL (…/v1)."""
    port = free_port()
    command = [
        str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--threads", str(threads), "--threads-batch", str(threads), "--ctx-size", "8192",
        "--jinja",  # parse the model's own tool-call format into `tool_calls`
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=sys.stderr, stderr=sys.stderr)
    try:
        deadline = time.monotonic() + ready_seconds
        while True:  # loading a model takes a while; /health says 200 once it is in memory
            if process.poll() is not None:
                raise SystemExit(f"llama-server exited with {process.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("llama-server did not become ready in time")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def run_evals(base_url: str, model: str, reports: Path, planner: str) -> int:
    """Both splits through the CLI; the worst exit code."""
    reports.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SHIPDECK_LLM_BASE_URL": base_url, "SHIPDECK_LLM_MODEL": model}
    worst = 0
    for split in SPLITS:
        stem = reports / f"{planner}-{split}"
        done = subprocess.run(
            [
                SHIPDECK, "eval", "--planner", planner,
                "--dataset", str(DATASETS / f"{split}.jsonl"),
                "--world", str(DATASETS / "world.yaml"),
                "--report", f"{stem}.json", "--html", f"{stem}.html",
            ],
            env=env,
            check=False,
        )  # fmt: skip
        worst = max(worst, done.returncode)
    return worst


def main() -> None:
    """Parse the options and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", type=Path, help="llama-server binary")
    parser.add_argument("--model", type=Path, help="a .gguf model file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--planner", default="llm", choices=["llm", "hybrid"])
    parser.add_argument("--ready-seconds", type=float, default=600)
    options = parser.parse_args()
    if options.model:
        if not options.server or not options.server.exists():
            raise SystemExit("give --server, the llama-server binary (make builds it)")
        with llama_server(
            options.server, options.model, options.threads, options.ready_seconds
        ) as served:
            raise SystemExit(
                run_evals(served, options.model.stem, options.reports, options.planner)
            )
    url, name = os.environ.get("SHIPDECK_LLM_BASE_URL"), os.environ.get("SHIPDECK_LLM_MODEL")
    if not url or not name:
        raise SystemExit("give MODEL=path/to/model.gguf, or set SHIPDECK_LLM_BASE_URL and _MODEL")
    raise SystemExit(run_evals(url, name, options.reports, options.planner))


if __name__ == "__main__":
    main()

"""How long a big `shipdeck load` makes a concurrent writer wait.

Loads a declaration of `--projects` new projects (3 targets, 3 services, four people and two
policies each: every grant, group and policy change an audit event) into a world that already
has `shop` (tests/conftest.py WORLD), while another thread keeps previewing and submitting
releases on shop/dev. Prints the load's duration and the concurrent writes' latencies.

    python -m benchmarks.declaration_load [--projects 200] [--database sqlite postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from api.wiring import Services
from core.config import Settings
from core.permissions import SYSTEM
from core.targets.service import load_declaration, parse_declaration
from tests.conftest import World, build_world
from tests.support.calls import call, deploy
from tests.support.postgres import throwaway_cluster


def big_declaration(projects: int, prefix: str = "bulk") -> str:
    """`projects` new projects, each with its own people, targets and policies."""
    return "projects:\n" + "".join(
        f"  - name: {prefix}{i}\n    services: [web, api, worker]\n"
        f"    owners: [{prefix}-owner{i}]\n    approvers: [{prefix}-approver{i}]\n"
        f"    requesters: [{prefix}-dev{i}, alice]\n    viewers: [{prefix}-viewer{i}]\n"
        "    targets:\n"
        "      - {environment: dev, runtime: sandbox}\n"
        "      - {environment: staging, runtime: sandbox}\n"
        "      - {environment: prod, runtime: sandbox}\n"
        "    policies:\n"
        "      - {environment: staging, steps: [{group: owners, count: 1}]}\n"
        "      - {environment: prod, steps: [{group: owners, count: 1}, {group: approvers, "
        "count: 1}]}\n"
        for i in range(projects)
    )


@dataclass
class Contention:
    """What a load did to a writer running next to it."""

    load_seconds: float
    writes: list[float]  # seconds each concurrent preview + submit took
    during: int  # how many of them finished while the load was still running

    @property
    def longest(self) -> float:
        """The longest concurrent write."""
        return max(self.writes, default=0.0)


def measure(
    world: World, projects: int, prefix: str = "bulk", most_writes: int | None = None
) -> Contention:
    """Load `projects` projects while alice previews and submits on shop/dev; time both.

    The writer writes back to back (no think time: the worst case for the load) until the
    load ends, or until `most_writes` writes.
    """
    declaration = parse_declaration(big_declaration(projects, prefix))
    done = threading.Event()
    started = threading.Event()
    writes: list[tuple[float, float]] = []  # (seconds taken, finished at)
    failure: list[BaseException] = []

    def writer() -> None:
        tag = 0
        try:
            started.wait()
            while not done.is_set() and (most_writes is None or tag < most_writes):
                tag += 1
                began = time.monotonic()
                release = deploy(world, "alice", "shop", "dev", web={"image_tag": f"8.{tag}.0"})
                call(world, "alice", "submit_release", release_id=release.id)
                writes.append((time.monotonic() - began, time.monotonic()))
        except BaseException as exc:  # reported by the caller
            failure.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    began = time.monotonic()
    try:
        with world.services.sessions() as session:
            started.set()
            load_declaration(session, actor=SYSTEM, declaration=declaration)
        ended = time.monotonic()
    finally:
        started.set()
        done.set()
        thread.join()
    if failure:
        raise failure[0]
    during = sum(1 for _, at in writes if at < ended)
    return Contention(ended - began, [taken for taken, _ in writes], during)


def load_alone(world: World, projects: int, prefix: str) -> float:
    """Seconds a load takes with nobody else writing."""
    declaration = parse_declaration(big_declaration(projects, prefix))
    began = time.monotonic()
    with world.services.sessions() as session:
        load_declaration(session, actor=SYSTEM, declaration=declaration)
    return time.monotonic() - began


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A fresh SQLite file or a throwaway PostgreSQL cluster."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'load.db'}"
    else:
        with throwaway_cluster() as url:
            yield url


def main() -> None:
    """Measure each database and print one line per database."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--database", nargs="+", default=["sqlite", "postgresql"])
    options = parser.parse_args()
    for kind in options.database:
        with database(kind) as url:
            services = Services.build(Settings(database_url=url), inline_apply=True)
            try:
                services.migrate()
                world = build_world(services)
                alone = load_alone(world, options.projects, "solo")
                result = measure(world, options.projects)
            finally:
                services.close()
        writes = result.writes
        print(  # noqa: T201
            f"{kind}: load of {options.projects} projects alone {alone:.2f} s; next to a writer "
            f"{result.load_seconds:.2f} s, during which {result.during} of {len(writes)} "
            f"preview+submit finished, longest {result.longest:.2f} s, "
            f"median {statistics.median(writes) if writes else 0:.3f} s"
        )


if __name__ == "__main__":
    main()

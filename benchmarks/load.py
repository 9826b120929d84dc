"""Throughput under concurrent load: `shipdeck serve` and a bare endpoint, each in its own process.

Starts a throwaway PostgreSQL cluster, seeds a world the product could produce (projects with
dev/staging/prod targets, applied history bulk-loaded, one pending release per prod target
created through the product), then runs `shipdeck serve` and the bare app, each in its own
process, and a bounded asyncio client in a third. Each cell (clients x mix) runs for
`--seconds` in all, as `--rounds` slices taken in turn with the other cells of its client count
(bare, pages, read, one, write, bare, pages, ...): this machine's speed moves by half from hour
to hour, and cells run one after another for a minute compared different machines. Cells:

- read mix: GET /releases (page of 50), GET /approvals (inbox), GET /releases/{id};
- one mix: GET /releases/{id} only, the same work as the bare endpoint's (one release by its
  number) with what shipdeck adds to it: the token, visibility, the release's ticket and its
  target's freezes, `allowed_actions`, the access log;
- bare pages: the read mix against the same pages as ONE SQL statement each (the bare app's
  pages from `benchmarks.core_latency`): the most the read mix could reach on this machine;
- write mix: 30% of requests are writes, each write operation a preview + submit (requester)
  + approve (owner) through REST on a staging target.

The baseline is a tiny FastAPI app, also in its own process, doing one indexed SELECT on the
same database with the same engine (pool) settings. `--workers 2` adds a cell of each mix on
`shipdeck serve --workers 2` per client count, next to the bare app on as many worker processes:
the machine's own ceiling for scaling across cores (the client needs a core too). The "of bare"
column always compares with the one-process bare app's one-row SELECT, "of pages" the read mix
with the same mix of one-statement pages on the one-process bare app; both are measured again
in each group of cells (client count, worker count), in the same rounds as the cells they
divide.

`--database sqlite` runs the same cells on a SQLite file (one writer at a time; `--workers` is
PostgreSQL only, as `shipdeck serve` says). `--mixes write` runs only the write mix.

Each cell prints throughput, p50 and p99, the longest single request (`max ms`), the server's
CPU per request (`cpu ms`: user + system of its processes over the measured window, divided by
the requests answered; PostgreSQL's own processes are not counted, SQLite's work is, as it runs
in the server; what a request costs, where req/s also says how the machine felt), how
many took over a second (`>1s`: the issue's "no request waits more than 1 s"), and status
counts.
On PostgreSQL, `lock>1s` is how many times a shipdeck request waited more than a second for a
lock another held, as PostgreSQL itself counts them (`log_lock_waits` logs each wait that
passes `deadlock_timeout`, 1 s): waiting behind another, apart from queueing for the CPU.
`queue>1s` is the server's own count, from its `/metrics`, of database work that waited more
than a second for its turn (PostgreSQL's turns, SQLite's write turn): queueing inside shipdeck.

    python -m benchmarks.load [--clients 10 50] [--seconds 12] [--rounds 3] [--workers 2]
        [--database sqlite] [--mixes read one write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TypedDict

import httpx2 as httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, insert, text

from api.wiring import Services
from benchmarks.serving import ROOT, cpu_seconds, database, one_row, process, served, server_pid
from core.config import Settings
from core.db import utcnow
from core.identity.service import ensure_user, issue_token
from core.permissions import SYSTEM
from core.releases.models import Preview, Release
from core.targets.service import load_declaration, parse_declaration

PROJECTS = 20
HISTORY = 20_000
# A write operation is 3 requests and a read 1: p writes per operation give 3p / (1 + 2p) of
# the requests; 0.3 of the requests are writes at p = 0.3 / 2.4.
WRITE_OPS = 0.3 / 2.4


def declaration() -> str:
    """20 projects on the simulated runtime; staging and prod need one owner's approval."""
    images = "images: {web: p/web:1.0.0, api: p/api:1.0.0, worker: p/worker:1.0.0}"
    return "projects:\n" + "".join(
        f"  - name: p{i}\n    services: [web, api, worker]\n"
        f"    owners: [bob]\n    requesters: [alice]\n    targets:\n"
        f"      - {{environment: dev, runtime: sandbox, {images}}}\n"
        f"      - {{environment: staging, runtime: sandbox, {images}}}\n"
        f"      - {{environment: prod, runtime: sandbox, {images}}}\n"
        f"    policies:\n"
        f"      - {{environment: staging, steps: [{{group: owners, count: 1}}]}}\n"
        f"      - {{environment: prod, steps: [{{group: owners, count: 1}}]}}\n"
        for i in range(PROJECTS)
    )


def seed(url: str) -> dict[str, str]:
    """Load the world; returns tokens for alice (requester) and bob (owner)."""
    services = Services.build(Settings(database_url=url), inline_apply=True)
    services.migrate()
    with services.sessions() as session:
        load_declaration(session, actor=SYSTEM, declaration=parse_declaration(declaration()))
        alice, bob = ensure_user(session, "alice"), ensure_user(session, "bob")
        tokens = {"alice": issue_token(session, alice), "bob": issue_token(session, bob)}
        alice_id = alice.id
        session.commit()
        targets = session.execute(text("SELECT id, project_id FROM targets ORDER BY id")).all()
    # Finished history is what any number of past applies leaves behind: bulk-load it.
    now = utcnow()
    rng = random.Random(7)
    releases, previews = [], []
    for number in range(1, HISTORY + 1):
        target = targets[number % len(targets)]
        created = now - timedelta(seconds=10 * (HISTORY - number) + 3600)
        releases.append(
            {
                "number": number,
                "project_id": target.project_id,
                "target_id": target.id,
                "kind": "deploy",
                "changes": {"web": {"image_tag": f"0.{number}.0"}},
                "services_key": "web",
                "lifecycle_state": rng.choice(["applied", "applied", "applied", "cancelled"]),
                "version": 3,
                "requested_by_id": alice_id,
                "channel": "rest",
                "emergency": False,
                "created_at": created,
                "updated_at": created,
            }
        )
        previews.append(
            {
                "release_number": number,
                "desired": {"web": {"image": f"p/web:0.{number}.0", "replicas": 1, "env": {}}},
                "diff": {"web": {"image": {"before": "p/web:1.0.0", "after": f"p/web:0.{number}"}}},
                "diff_hash": "0" * 64,
                "base_fingerprint": "0" * 64,
                "risk_level": "low",
                "risk_reasons": [],
                "created_at": created,
                "expires_at": created + timedelta(minutes=15),
            }
        )
    with services.engine.begin() as connection:
        for table, rows in ((Release, releases), (Preview, previews)):
            for start in range(0, len(rows), 5000):
                connection.execute(insert(table), rows[start : start + 5000])
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT setval('releases_number_seq', :n)"), {"n": HISTORY})
        connection.execute(text("ANALYZE"))
    services.close()
    # Open approvals come from the product itself: one pending release per prod target.
    with served(url) as base, httpx.Client(base_url=base, timeout=60) as client:
        for i in range(PROJECTS):
            body = {
                "project": f"p{i}",
                "environment": "prod",
                "changes": {"web": {"image_tag": "2"}},
            }
            made = client.post("/api/v1/releases", json=body, headers=auth(tokens["alice"]))
            made.raise_for_status()
            submit = f"/api/v1/releases/{made.json()['id']}/submit"
            client.post(submit, headers=auth(tokens["alice"])).raise_for_status()
    return tokens


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bare(url: str, workers: int = 1) -> AbstractContextManager[str]:
    """The bare baseline app in its own process (N uvicorn worker processes if N > 1)."""
    env = {"BENCH_BARE_WORKERS": str(workers)}
    return process(["-m", "benchmarks.load", "--bare"], url, "/bare/1", env)


def bare_app() -> FastAPI:
    """One indexed SELECT by primary key, same engine settings as shipdeck (sync, thread pool).

    Also the read mix's pages as one statement each (`/bare/inbox`, `/bare/releases`,
    `/bare/releases/{number}`).
    """
    from api.serving import settle_heap
    from benchmarks.core_latency import add_bare_pages
    from core.db import make_engine

    engine = make_engine(os.environ["SHIPDECK_DATABASE_URL"])
    app = FastAPI()
    add_bare_pages(app, engine)

    @app.get("/bare/{number}")
    def read(number: int) -> dict[str, object]:
        return one_row(engine, number)

    settle_heap()  # in each worker, as `serve` does: the collector set as the server's is
    return app


def bare_app_main(port: int) -> None:
    """Serve `bare_app`; with BENCH_BARE_WORKERS > 1 in as many processes, as `serve` does."""
    import uvicorn

    workers = int(os.environ.get("BENCH_BARE_WORKERS", "1"))
    target = "benchmarks.load:bare_app"
    uvicorn.run(
        target, factory=True, host="127.0.0.1", port=port, workers=workers, log_level="warning"
    )


class Result(TypedDict):
    """What one cell's client process reports."""

    latencies: list[float]
    statuses: dict[str, int]
    errors: int
    elapsed: float
    cpu: float  # CPU seconds of the server's processes (not PostgreSQL's) in the measured window


def merged(results: list[Result]) -> Result:
    """One cell's rounds as one result."""
    statuses: dict[str, int] = {}
    for result in results:
        for status, count in result["statuses"].items():
            statuses[status] = statuses.get(status, 0) + count
    return {
        "latencies": [ms for result in results for ms in result["latencies"]],
        "statuses": statuses,
        "errors": sum(result["errors"] for result in results),
        "elapsed": sum(result["elapsed"] for result in results),
        "cpu": sum(result["cpu"] for result in results),
    }


@dataclass
class Tally:
    """Latencies (ms) and status counts of one cell."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0

    def record(self, started: float, status: int) -> None:
        self.latencies.append((time.perf_counter() - started) * 1000)
        self.statuses[status] = self.statuses.get(status, 0) + 1


async def _call(
    client: httpx.AsyncClient, tally: Tally, method: str, path: str, **kw: object
) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await client.request(method, path, **kw)  # type: ignore[arg-type]
    except httpx.HTTPError:
        tally.errors += 1
        return None
    tally.record(started, response.status_code)
    return response


async def _worker(
    client: httpx.AsyncClient,
    tally: Tally,
    mix: str,
    tokens: dict[str, str],
    until: float,
    seed: int,
) -> None:
    rng = random.Random(seed)
    alice, bob = auth(tokens["alice"]), auth(tokens["bob"])
    while time.perf_counter() < until:
        if mix == "bare":
            await _call(client, tally, "GET", f"/bare/{rng.randint(1, HISTORY)}")
        elif mix == "one":
            number = rng.randint(1, HISTORY)
            await _call(client, tally, "GET", f"/api/v1/releases/R-{number}", headers=bob)
        elif mix == "write" and rng.random() < WRITE_OPS:
            body = {
                "project": f"p{rng.randrange(PROJECTS)}",
                "environment": "staging",
                "changes": {"web": {"image_tag": f"3.{rng.randrange(10**9)}"}},
            }
            made = await _call(client, tally, "POST", "/api/v1/releases", json=body, headers=alice)
            if made is None or made.status_code != 201:
                continue
            rid = made.json()["id"]
            sent = await _call(
                client, tally, "POST", f"/api/v1/releases/{rid}/submit", headers=alice
            )
            if sent is None or sent.status_code != 200:
                continue
            await _call(client, tally, "POST", f"/api/v1/approvals/{rid}/approve", headers=bob)
        else:
            pick = rng.random()
            pages = mix == "pages"
            if pick < 0.4:
                path = "/bare/releases" if pages else "/api/v1/releases"
            elif pick < 0.7:
                path = "/bare/inbox" if pages else "/api/v1/approvals"
            else:
                number = rng.randint(1, HISTORY)
                path = f"/bare/releases/{number}" if pages else f"/api/v1/releases/R-{number}"
            await _call(client, tally, "GET", path, headers=bob)


async def _drive(
    base: str, mix: str, clients: int, seconds: float, tokens: dict[str, str], pid: int
) -> Result:
    tally = Tally()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        warm = time.perf_counter() + min(2.0, seconds / 5)
        await asyncio.gather(
            *(_worker(client, Tally(), mix, tokens, warm, -i) for i in range(clients))
        )
        used = cpu_seconds(pid)
        started = time.perf_counter()
        until = started + seconds
        await asyncio.gather(
            *(_worker(client, tally, mix, tokens, until, i) for i in range(clients))
        )
        elapsed = time.perf_counter() - started
        used = cpu_seconds(pid) - used
    return {
        "latencies": tally.latencies,
        "statuses": {str(k): v for k, v in tally.statuses.items()},
        "errors": tally.errors,
        "elapsed": elapsed,
        "cpu": used,
    }


def client_main(spec: str) -> None:
    """The load client's own process: drive one cell and print its tally as JSON."""
    args = json.loads(spec)
    result = asyncio.run(
        _drive(
            args["base"], args["mix"], args["clients"], args["seconds"], args["tokens"], args["pid"]
        )
    )
    print(json.dumps(result))


class LockWaits:
    """PostgreSQL's own record of lock waits longer than `deadlock_timeout` (1 s by default):
    with `log_lock_waits` on, the server logs one "still waiting" line for each."""

    def __init__(self, url: str) -> None:
        engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("ALTER SYSTEM SET log_lock_waits = on"))
            connection.execute(text("SELECT pg_reload_conf()"))
            self.after = str(connection.execute(text("SHOW deadlock_timeout")).scalar())
            data = Path(str(connection.execute(text("SHOW data_directory")).scalar()))
        engine.dispose()
        self.log = data.parent / "log"  # where tests.support.postgres has pg_ctl write it
        self.offset = self.log.stat().st_size

    def since_last(self) -> int:
        """Waits logged since the last call."""
        with self.log.open("rb") as log:
            log.seek(self.offset)
            written = log.read()
        self.offset += len(written)
        return written.count(b"still waiting for")


def cell(base: str, mix: str, clients: int, seconds: float, tokens: dict[str, str]) -> Result:
    """Run one cell's client in its own process."""
    spec = json.dumps(
        {
            "base": base,
            "mix": mix,
            "clients": clients,
            "seconds": seconds,
            "tokens": tokens,
            "pid": server_pid(base),
        }
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.load", "--client", spec],
        env=env,
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    result: Result = json.loads(done.stdout)
    return result


SCRAPE_TOKEN = "bench-scrape-token-" + "0" * 16  # the benchmark server's /metrics token
QUEUES = ("shipdeck_turn_wait_seconds", "shipdeck_sqlite_write_wait_seconds")


def queued_over_a_second(base: str) -> int:
    """How many waits for a turn took over 1 s so far, by the server's own count (all its
    workers': they share one metrics directory)."""
    scraped = httpx.get(f"{base}/metrics", headers=auth(SCRAPE_TOKEN), timeout=30)
    scraped.raise_for_status()
    over = 0.0
    for family in text_string_to_metric_families(scraped.text):
        if family.name in QUEUES:
            value = {(s.name, s.labels.get("le")): s.value for s in family.samples}
            name = family.name
            over += value[(f"{name}_count", None)] - value[(f"{name}_bucket", "1.0")]
    return round(over)


def rate(result: Result) -> float:
    """Requests per second of a cell."""
    return len(result["latencies"]) / result["elapsed"]


def line(
    name: str,
    result: Result,
    bare_rps: float | None,
    pages_rps: float | None = None,
    lock_waits: int | None = None,
    queued: int | None = None,
) -> str:
    latencies = sorted(result["latencies"])
    statuses = result["statuses"]
    rps = rate(result)
    q = (
        statistics.quantiles(latencies, n=100, method="inclusive")
        if len(latencies) > 1
        else [0.0] * 99
    )
    five = sum(n for s, n in statuses.items() if int(s) >= 500)
    four = sum(n for s, n in statuses.items() if 400 <= int(s) < 500)
    share = f"{rps / bare_rps * 100:>7.0f}%" if bare_rps else f"{'':>8}"
    pages = f"{rps / pages_rps * 100:>7.0f}%" if pages_rps else ""
    longest = latencies[-1] if latencies else 0.0
    slow = sum(1 for ms in latencies if ms > 1000)
    waits = "" if lock_waits is None else lock_waits
    queue = "" if queued is None else queued
    cpu = result["cpu"] / len(latencies) * 1000 if latencies else 0.0
    return (
        f"  {name:<24}{rps:>8.1f}{share}{q[49]:>9.1f}{q[98]:>9.1f}{longest:>9.0f}{slow:>6}"
        f"{waits:>8}{queue:>9}{five:>6}{four:>6}{result['errors']:>6}{cpu:>9.2f}{pages:>9}"
    )


@dataclass
class Cell:
    """One row of the table: a mix against one server, its rounds gathered."""

    name: str
    base: str
    mix: str
    shipdeck: bool  # counts turn queueing and lock waits (the bare app has neither)
    rounds: list[Result] = field(default_factory=list)
    queued: int = 0
    lock_waits: int | None = None  # PostgreSQL's own count; SQLite keeps none

    @property
    def result(self) -> Result:
        """The rounds as one result."""
        return merged(self.rounds)


def interleaved(
    cells: list[Cell],
    clients: int,
    seconds: float,
    rounds: int,
    tokens: dict[str, str],
    locks: LockWaits | None,
) -> None:
    """Run every cell for `seconds` in all, as `rounds` slices taken in turn, so a slow or
    fast spell of the machine (its speed moves by half from hour to hour) meets every cell
    alike and the ratios compare like with like."""
    for _ in range(rounds):
        for one in cells:
            if one.shipdeck:
                if locks is not None:
                    locks.since_last()  # what the cells before it logged is not its own
                queued = queued_over_a_second(one.base)
            one.rounds.append(cell(one.base, one.mix, clients, seconds / rounds, tokens))
            if one.shipdeck:
                one.queued += queued_over_a_second(one.base) - queued
                if locks is not None:
                    one.lock_waits = (one.lock_waits or 0) + locks.since_last()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--seconds", type=float, default=12, help="Per cell, all rounds.")
    parser.add_argument(
        "--rounds", type=int, default=3, help="Slices per cell, taken in turn with the others."
    )
    parser.add_argument(
        "--workers", type=int, nargs="*", default=[], help="Also run the mixes on N workers."
    )
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument(
        "--mixes", nargs="+", choices=["read", "one", "write"], default=["read", "one", "write"]
    )
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args.client)
        return
    if args.bare:
        bare_app_main(args.bare)
        return
    if args.rounds < 1 or args.seconds <= 0 or min(args.clients) < 1:
        parser.error("--rounds and --clients take 1 or more, --seconds more than 0")
    with database(args.database) as url:
        started = time.perf_counter()
        tokens = seed(url)
        engine = "PostgreSQL 15" if args.database == "postgresql" else "SQLite (WAL)"
        print(
            f"{engine}; {PROJECTS * 3} targets, {HISTORY:,} past releases, "
            f"{PROJECTS} open approvals (seeded in {time.perf_counter() - started:.0f}s); "
            f"{args.seconds:g} s per cell in {args.rounds} rounds taken in turn; "
            "server, baseline and client in separate processes"
        )
        heads = (
            f"{'req/s':>8}{'of bare':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'>1s':>6}"
            f"{'lock>1s':>8}{'queue>1s':>9}{'5xx':>6}{'4xx':>6}{'err':>6}{'cpu ms':>9}"
            f"{'of pages':>9}"
        )
        print(f"  {'cell':<24}{heads}")
        locks = LockWaits(url) if args.database == "postgresql" else None
        scraping = {"SHIPDECK_METRICS_TOKEN": SCRAPE_TOKEN}
        sizes = [1, *(w for w in args.workers if w > 1 and args.database == "postgresql")]
        for clients, workers in ((c, w) for c in args.clients for w in sizes):
            # Each group carries its own references, measured in the same rounds: the
            # one-process bare app's row and, for the read mix, its one-statement pages.
            suffix = f", {workers} wk" if workers > 1 else ""
            with ExitStack() as up:
                theirs = up.enter_context(bare(url))
                cells = [Cell(f"bare SELECT, {clients} cl", theirs, "bare", False)]
                if "read" in args.mixes:  # the read mix's own ceiling
                    cells.append(Cell(f"bare pages, {clients} cl", theirs, "pages", False))
                if workers > 1:  # the machine's own ceiling: the bare app on as many cores
                    scaled = up.enter_context(bare(url, workers))
                    cells.append(Cell(f"bare SELECT, {clients} cl{suffix}", scaled, "bare", False))
                ours = up.enter_context(served(url, workers, env=scraping))
                cells += [
                    Cell(f"{mix} mix, {clients} cl{suffix}", ours, mix, True) for mix in args.mixes
                ]
                interleaved(cells, clients, args.seconds, args.rounds, tokens, locks)
            row = rate(cells[0].result)
            pages = next((rate(c.result) for c in cells if c.mix == "pages"), None)
            for one in cells:
                reference = None if one is cells[0] else row
                ceiling = pages if one.mix == "read" else None
                print(
                    line(one.name, one.result, reference, ceiling, one.lock_waits, one.queued)
                    if one.shipdeck
                    else line(one.name, one.result, reference)
                )


if __name__ == "__main__":
    main()

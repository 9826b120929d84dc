"""Inbox and preview latency against a bare indexed SELECT, same server, same database, one run.

Seeds 100k releases and 20k open approval tickets, starts the real app under uvicorn with one
extra bare endpoint (`GET /bare/{n}`: one indexed SELECT by primary key), and measures each
over HTTP from a client in this process. Prints p50/p99 and the ratios to the bare endpoint.

    python benchmarks/core_latency.py [--db sqlite|postgresql|both] [--requests 300]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx2 as httpx
from fastapi import FastAPI
from sqlalchemy import insert, text

from api.wiring import Services
from core.approvals.models import ApprovalTicket
from core.config import Settings
from core.db import utcnow
from core.identity.service import ensure_user, issue_token, set_grant
from core.permissions import SYSTEM, Role
from core.releases.models import Preview, Release
from core.targets.service import load_declaration, parse_declaration
from tests.support.postgres import throwaway_cluster
from tests.support.server import running_server

RELEASES = 100_000
OPEN_TICKETS = 20_000
PROJECTS = 20
STATES = ["applied", "applied", "applied", "cancelled", "failed", "rolled_back", "expired"]


def seed(services: Services) -> dict[str, str]:
    """Bulk-load the world; returns tokens for the requester and the approver."""
    declaration = "projects:\n" + "".join(
        f"  - name: p{i}\n    services: [web, api, worker]\n    targets:\n"
        f"      - {{environment: dev, runtime: sandbox}}\n"
        f"      - {{environment: staging, runtime: sandbox}}\n"
        f"      - {{environment: prod, runtime: sandbox}}\n"
        for i in range(PROJECTS)
    )
    with services.sessions() as session:
        load_declaration(session, actor=SYSTEM, declaration=parse_declaration(declaration))
        alice, bob = ensure_user(session, "alice"), ensure_user(session, "bob")
        set_grant(session, alice, Role.requester, None)
        set_grant(session, bob, Role.approver, None)
        tokens = {"alice": issue_token(session, alice), "bob": issue_token(session, bob)}
        alice_id = alice.id
        session.commit()
        targets = session.execute(text("SELECT id, project_id, environment FROM targets")).all()
    now = utcnow()
    rng = random.Random(7)
    releases, previews, tickets = [], [], []
    open_numbers = set(rng.sample(range(1, RELEASES + 1), OPEN_TICKETS))
    for number in range(1, RELEASES + 1):
        target = targets[number % len(targets)]
        pending = number in open_numbers
        releases.append(
            {
                "number": number,
                "project_id": target.project_id,
                "target_id": target.id,
                "kind": "deploy",
                "changes": {"web": {"image_tag": f"1.{number}.0"}},
                "services_key": "web",
                "lifecycle_state": "pending_approval" if pending else rng.choice(STATES),
                "version": 2,
                "requested_by_id": alice_id,
                "channel": "rest",
                "emergency": False,
                "created_at": now - timedelta(seconds=RELEASES - number),
                "updated_at": now,
            }
        )
        if pending:
            previews.append(
                {
                    "release_number": number,
                    "desired": {"web": {"image": f"p/web:1.{number}.0", "replicas": 1, "env": {}}},
                    "diff": {"web": {"image": {"before": "p/web:1", "after": f"p/web:1.{number}"}}},
                    "diff_hash": "0" * 64,
                    "base_fingerprint": "0" * 64,
                    "risk_level": "low",
                    "risk_reasons": [],
                    "created_at": now,
                    "expires_at": now + timedelta(days=1),
                }
            )
            tickets.append(
                {
                    "release_number": number,
                    "project_id": target.project_id,
                    "environment": target.environment,
                    "risk_level": rng.choice(["low", "medium", "high"]),
                    "requested_by_id": alice_id,
                    "steps": [{"group": "approvers", "count": 1}],
                    "policy_reason": "benchmark",
                    "current_step": 0,
                    "current_group": "approvers",
                    "state": "pending",
                    "created_at": now,
                }
            )
    with services.engine.begin() as connection:
        for table, rows in ((Release, releases), (Preview, previews), (ApprovalTicket, tickets)):
            for start in range(0, len(rows), 5000):
                connection.execute(insert(table), rows[start : start + 5000])
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT setval('releases_number_seq', :n)"), {"n": RELEASES})
            connection.execute(text("ANALYZE"))
    return tokens


def add_bare(services: Services) -> Callable[[FastAPI], None]:
    """The baseline: one indexed SELECT by primary key, on the same engine."""

    def extend(app: FastAPI) -> None:
        @app.get("/bare/{number}")
        def bare(number: int) -> dict[str, object]:
            with services.engine.connect() as connection:
                row = connection.execute(
                    text("SELECT number, lifecycle_state FROM releases WHERE number = :n"),
                    {"n": number},
                ).one()
            return {"number": row.number, "lifecycle_state": row.lifecycle_state}

    return extend


def measure(n: int, call: Callable[[int], httpx.Response]) -> list[float]:
    """Latency in ms of n sequential calls (after 20 warm-up calls)."""
    for i in range(20):
        call(i).raise_for_status()
    samples = []
    for i in range(n):
        start = time.perf_counter()
        call(i).raise_for_status()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


def run(url: str, requests: int) -> None:
    services = Services.build(Settings(database_url=url), inline_apply=True)
    services.migrate()
    started = time.perf_counter()
    tokens = seed(services)
    print(
        f"  seeded {RELEASES:,} releases / {OPEN_TICKETS:,} open tickets "
        f"in {time.perf_counter() - started:.1f}s"
    )
    with (
        running_server(services, add_bare(services)) as address,
        httpx.Client(base_url=f"http://{address}", timeout=30) as client,
    ):
        alice = {"Authorization": f"Bearer {tokens['alice']}"}
        bob = {"Authorization": f"Bearer {tokens['bob']}"}
        rng = random.Random(1)
        cases: dict[str, Callable[[int], httpx.Response]] = {
            "bare indexed SELECT": lambda i: client.get(f"/bare/{rng.randint(1, RELEASES)}"),
            "inbox (all, page of 50)": lambda i: client.get("/api/v1/approvals", headers=bob),
            "inbox (mine, page of 50)": lambda i: client.get(
                "/api/v1/approvals", params={"mine": "true"}, headers=bob
            ),
            "inbox (project+risk filter)": lambda i: client.get(
                "/api/v1/approvals",
                params={"project": f"p{i % PROJECTS}", "risk": "high"},
                headers=bob,
            ),
            "release preview": lambda i: client.post(
                "/api/v1/releases",
                json={
                    "project": f"p{i % PROJECTS}",
                    "environment": "staging",
                    "changes": {"web": {"image_tag": f"9.{i}.0"}},
                },
                headers=alice,
            ),
        }
        results = {name: measure(requests, call) for name, call in cases.items()}
    bare50, bare99 = (
        pct(results["bare indexed SELECT"], 50),
        pct(results["bare indexed SELECT"], 99),
    )
    print(f"  {'endpoint':<30}{'p50 ms':>9}{'p99 ms':>9}{'p50 x':>8}{'p99 x':>8}")
    for name, samples in results.items():
        p50, p99 = pct(samples, 50), pct(samples, 99)
        print(f"  {name:<30}{p50:>9.2f}{p99:>9.2f}{p50 / bare50:>8.1f}{p99 / bare99:>8.1f}")
    services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"SQLite ({args.requests} sequential requests per endpoint)")
            run(f"sqlite:///{Path(tmp) / 'bench.db'}", args.requests)
    if args.db in ("postgresql", "both"):
        with throwaway_cluster() as url:
            print(f"PostgreSQL 15 ({args.requests} sequential requests per endpoint)")
            run(url, args.requests)


if __name__ == "__main__":
    main()

"""Soak the governance invariants: 10,000+ random steps through the doors, then print the tally.

    python -m benchmarks.governance_soak [--steps 10000] [--seed N] [--database-url URL]

Same driver as tests/core/test_governance.py (tests/support/governance.py): random users
(outsiders and viewers included), the tool door and REST, hostile text; after every step the
database and audit stream are checked. Prints steps, calls, refusals and violations (0 expected).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.wiring import Services
from core.config import Settings
from tests.conftest import build_world
from tests.support import governance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp()) / 'soak.db'}"
    services = Services.build(Settings(database_url=url), inline_apply=True)
    services.migrate()
    world = build_world(services)
    settings = Settings(database_url=url, migrate_on_start=False)
    started = time.perf_counter()
    with TestClient(create_app(settings, services)) as client:
        report = governance.run(services, client, world.tokens, steps=args.steps, seed=args.seed)
    elapsed = time.perf_counter() - started
    services.close()
    done = {tool: report.calls[tool] - report.refused[tool] for tool in sorted(report.calls)}
    print(f"database      {services.engine.dialect.name}")
    print(f"steps         {report.steps} in {elapsed:.0f} s ({report.steps / elapsed:.1f}/s)")
    print(f"calls         {sum(report.calls.values())}, refused {sum(report.refused.values())}")
    print("succeeded     " + ", ".join(f"{tool} {n}" for tool, n in done.items()))
    print(f"violations    {len(report.violations)}")
    for violation in report.violations:
        print(f"  {violation}")


if __name__ == "__main__":
    main()

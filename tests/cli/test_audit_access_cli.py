"""`shipdeck audit access prune`: retention of the access log, run as a real process."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

from core.db import utcnow
from tests.cli.test_cli import db, run  # noqa: F401  (the fixture)


def test_prune_by_age_keeps_new_reads_and_is_audited(db: str) -> None:  # noqa: F811
    assert run(db, "db", "upgrade").returncode == 0
    connection = sqlite3.connect(db.removeprefix("sqlite:///"))
    for days in (400, 100, 1):
        at = (utcnow() - timedelta(days=days)).replace(tzinfo=None).isoformat(" ")
        connection.execute(
            "INSERT INTO audit_access_log (at, actor, channel, tool, args) "
            "VALUES (?, 'bob', 'rest', 'list_releases', '{}')",
            (at,),
        )
    connection.commit()
    connection.close()

    both = run(db, "audit", "access", "prune", "--before", "2020-01-01", "--older-than", "9d")
    assert both.returncode == 1 and "exactly one" in both.stderr
    bad = run(db, "audit", "access", "prune", "--older-than", "90 days; DROP TABLE x")
    assert bad.returncode == 1 and "not an age" in bad.stderr

    pruned = run(db, "audit", "access", "prune", "--older-than", "90d")
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("2 access records before")
    kept = run(db, "audit", "export", "--access")
    assert kept.returncode == 0 and len(kept.stdout.splitlines()) == 1
    events = run(db, "audit", "export")
    actions = [json.loads(line)["action"] for line in events.stdout.splitlines()]
    assert actions[-1] == "access_log_pruned"
    assert run(db, "audit", "verify").returncode == 0

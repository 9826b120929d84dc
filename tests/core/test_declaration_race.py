"""Two declaration loads of the same file AT ONCE end as two loads in a row would.

Both finish, the database holds one copy of each row, each change is audited once (by the
load that made it; the other reports nothing for that part), the chain verifies, and a third
load changes nothing. The race is made, not hoped for: a third connection holds the lock the
loads' first write needs (PostgreSQL: a SHARE lock on that table, which reads pass and writes
wait for; SQLite: the write lock itself), both loads are let go once both wait, then it is
released.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from api.wiring import Services
from core.audit.models import AuditEvent
from core.audit.service import canonical_json, verify
from core.permissions import SYSTEM
from core.sqlite_gate import gate_for
from core.targets.models import PolicyRule, Project, Target
from core.targets.service import load_declaration, parse_declaration
from tests.support.pg_locks import lock_waiters

NEW_PEOPLE = """
groups:
  racers: [rita, ray]
projects:
  - name: race1
    services: [web]
    owners: [olga, rita]
    requesters: [rick]
    targets:
      - {environment: prod, runtime: sandbox}
"""

NEW_PROJECTS = """
projects:
  - name: race1
    services: [web, api]
    targets:
      - {environment: dev, runtime: sandbox}
      - {environment: prod, runtime: sandbox}
    policies:
      - environment: prod
        steps: [{group: owners, count: 1}]
  - name: race2
    services: [gateway]
    targets:
      - {environment: prod, runtime: sandbox}
"""

BARE = """
projects:
  - name: race1
    services: [web]
    targets:
      - {environment: prod, runtime: sandbox}
"""

NEW_POLICIES = """
projects:
  - name: race1
    services: [web]
    targets:
      - {environment: prod, runtime: sandbox}
    policies:
      - environment: prod
        steps: [{group: owners, count: 1}]
      - environment: prod
        emergency: true
        steps: [{group: owners, count: 1}]
"""

CHANGED_TARGET = """
projects:
  - name: race1
    services: [web]
    targets:
      - {environment: prod, runtime: sandbox, preview_ttl_minutes: 30}
"""

# (what was loaded before, the file both loads declare, the table whose first write they race to)
CASES = {
    "new people": (None, NEW_PEOPLE, "users"),
    "new projects": (None, NEW_PROJECTS, "projects"),
    "new policies": (BARE, NEW_POLICIES, "policy_rules"),
    "changed target": (BARE, CHANGED_TARGET, "targets"),
}


def _load(services: Services, declaration: str) -> list[str]:
    with services.sessions() as session:
        result = load_declaration(session, actor=SYSTEM, declaration=parse_declaration(declaration))
    return list(result["changed"])


def _last_seq(services: Services) -> int:
    with services.sessions() as session:
        return int(session.scalar(select(func.coalesce(func.max(AuditEvent.seq), 0))) or 0)


def _until(condition: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        threading.Event().wait(0.002)


@contextmanager
def first_write_held(services: Services, table: str, loaders: int) -> Iterator[None]:
    """Hold `table`'s writers until `loaders` threads wait; release when the block ends."""
    engine = services.engine
    with engine.connect() as holder, engine.connect() as watcher:
        if engine.dialect.name == "postgresql":
            holder.execute(text(f"LOCK TABLE {table} IN SHARE MODE"))
            yield
            # Each load waits for our lock, or for the other load (which waits for ours).
            _until(lambda: lock_waiters(watcher) >= loaders, "the loads never both waited")
        else:
            gate = gate_for(str(Path(str(engine.url.database)).resolve()))
            holder.begin()
            holder.execute(text("SELECT 1"))  # BEGIN IMMEDIATE: the write lock is ours
            yield
            _until(lambda: gate.waiting >= loaders, "the loads never both queued")
        holder.rollback()


def _race(services: Services, declaration: str, table: str) -> list[Any]:
    """Run two loads of `declaration` that both read before either writes; their results."""
    results: list[Any] = [None, None]

    def run(i: int) -> None:
        try:
            results[i] = _load(services, declaration)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), name=f"load-{i}") for i in range(2)]
    with first_write_held(services, table, len(threads)):
        for thread in threads:
            thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive(), "a load never finished"
    return results


@pytest.mark.parametrize("case", list(CASES))
def test_two_loads_at_once_end_as_two_loads_in_a_row(services: Services, case: str) -> None:
    before, declaration, table = CASES[case]
    if before is not None:
        _load(services, before)
    since = _last_seq(services)

    results = _race(services, declaration, table)

    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    assert errors == [], errors  # never a raw IntegrityError, whichever load lost
    first, second = results
    # Every change was made (and reported) by exactly one of the two loads.
    assert first or second
    assert not (Counter(first) & Counter(second)), (first, second)
    assert len(set(first + second)) == len(first + second)
    with services.sessions() as session:
        events = session.execute(
            select(AuditEvent.action, AuditEvent.project, AuditEvent.data).where(
                AuditEvent.seq > since
            )
        ).all()
        audited = Counter((a, p, canonical_json(d)) for a, p, d in events)
        assert [e for e, n in audited.items() if n > 1] == []
        loaded = [p for a, p, _ in events if a == "declaration_loaded"]
        assert len(loaded) == len(set(loaded)), loaded
        assert session.scalar(select(func.count()).select_from(Project)) == len(
            parse_declaration(declaration).projects
        )
        rules = session.scalar(select(func.count()).select_from(PolicyRule))
        assert rules == sum(len(p.policies) for p in parse_declaration(declaration).projects)
        ttl = session.scalars(select(Target.preview_ttl_seconds)).all()
        assert (1800 in ttl) == (case == "changed target")
        assert verify(session).ok
    assert _load(services, declaration) == []  # a third load, in a row: nothing left to do

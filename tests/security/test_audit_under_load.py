"""The audit stream under concurrent traffic on PostgreSQL: no false tamper reports, no deadlocks.

Writers submit and approve releases on every target while readers list and read them and a
verifier walks the chain again and again. Before the keyed chain, verify read rows and head in
separate READ COMMITTED statements (false reports), and a decision could lock the chain head
before a release row (deadlocks, HTTP 500).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from api.wiring import Services
from core.errors import ShipdeckError
from tests.conftest import World, build_world
from tests.support.calls import call, deploy

WRITERS = 6
READERS = 2
CYCLES = 5  # release cycles per writer

_tags = itertools.count(1)


@pytest.fixture
def pg_world(pg_services: Services) -> World:
    return build_world(pg_services)


class _Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.unexpected: list[str] = []

    def run(self, step: Callable[[], Any]) -> Any:
        """Run one call; its result, or None when it was refused or failed."""
        result = None
        try:
            result = step()
            outcome = "ok"
        except ShipdeckError as exc:  # a refusal the product explains (4xx), not a failure
            outcome = exc.code
        except Exception as exc:  # a deadlock or any other 500
            outcome = "unexpected"
            with self.lock:
                self.unexpected.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        with self.lock:
            self.outcomes[outcome] += 1
        return result


_TARGETS = [
    ("shop", "prod", "web", ["bob", "erin"]),
    ("shop", "prod", "api", ["dave", "erin"]),
    ("shop", "staging", "worker", []),
    ("shop", "dev", "web", []),
    ("payment", "prod", "gateway", ["frank", "carol"]),
    ("shop", "staging", "api", []),
]


def _writer(world: World, index: int, tally: _Tally) -> None:
    project, env, service, approvers = _TARGETS[index % len(_TARGETS)]
    for _ in range(CYCLES):
        tag = f"{index}.{next(_tags)}.0"
        changes = {service: {"image_tag": tag}}
        preview = tally.run(partial(deploy, world, "alice", project, env, **changes))
        if preview is None:
            continue
        tally.run(partial(call, world, "alice", "submit_release", release_id=preview.id))
        for approver in approvers:
            tally.run(partial(call, world, approver, "approve_release", release_id=preview.id))


def _reader(world: World, stop: threading.Event, tally: _Tally) -> None:
    while not stop.is_set():
        tally.run(lambda: call(world, "victor", "list_releases", project="shop"))
        tally.run(lambda: call(world, "bob", "list_approvals"))


@pytest.mark.postgres
def test_verify_under_concurrent_writes_never_reports_false_tampering(pg_world: World) -> None:
    tally = _Tally()
    stop = threading.Event()
    writers = [threading.Thread(target=_writer, args=(pg_world, i, tally)) for i in range(WRITERS)]
    readers = [
        threading.Thread(target=_reader, args=(pg_world, stop, tally)) for _ in range(READERS)
    ]
    started = time.perf_counter()
    for thread in writers + readers:
        thread.start()
    verdicts: list[tuple[bool, str | None]] = []
    while any(t.is_alive() for t in writers) or len(verdicts) < 10:
        result = call(pg_world, "admin", "verify_audit")
        verdicts.append((result.ok, result.reason))
    stop.set()
    for thread in writers + readers:
        thread.join()
    elapsed = time.perf_counter() - started
    false_reports = [reason for ok, reason in verdicts if not ok]
    print(  # noqa: T201 - the figures the report quotes
        f"\n{len(verdicts)} verifies, {sum(tally.outcomes.values())} calls in {elapsed:.1f}s: "
        f"{dict(tally.outcomes)}; false reports {len(false_reports)}"
    )
    assert tally.unexpected == [], tally.unexpected[:5]  # no deadlock, no 500
    assert false_reports == []
    assert tally.outcomes["ok"] > WRITERS * CYCLES
    final = call(pg_world, "admin", "verify_audit")
    assert final.ok and final.unexplained == [], final.reason


@pytest.mark.postgres
def test_an_open_transaction_holds_no_chain_lock_until_it_commits(pg_world: World) -> None:
    # The deadlock of issue 14: a decision locked the chain head, then a release row, while
    # another transaction held the release row and waited for the head. Now an event is linked
    # at commit, after every other write, so the head is never held while waiting for a row.
    from sqlalchemy import text

    from core.audit.service import record
    from core.permissions import SYSTEM

    sessions = pg_world.services.sessions
    with sessions() as writer, sessions() as other:
        writer.execute(text("UPDATE releases SET version = version WHERE false"))
        record(writer, actor=SYSTEM, action="probe")
        writer.flush()
        locked = other.execute(
            text("SELECT last_seq FROM audit_head WHERE id = 1 FOR UPDATE NOWAIT")
        ).scalar_one()
        other.rollback()  # we could take the head: the writer does not hold it
        writer.commit()
    with sessions() as session:
        assert session.execute(text("SELECT last_seq FROM audit_head")).scalar_one() == locked + 1

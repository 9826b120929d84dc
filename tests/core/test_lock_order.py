"""Release and ticket rows are locked in one order: a supersede never deadlocks a decision.

A submit that supersedes an older release and a decision on that older release both touch the
older release's row and its ticket's row. Taken in opposite orders they deadlock on
PostgreSQL (`deadlock detected`, a 500 to one client). These races run them side by side.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle
from typing import Any

import pytest
from sqlalchemy import select, text

from core.approvals.models import ApprovalTicket
from core.audit.models import AuditEvent
from core.errors import Conflict
from core.ids import parse_release_id
from core.releases.models import Release
from tests.conftest import World, build_world
from tests.support.calls import call, deploy

ROUNDS = 120
BUDGET_S = 6.0
# What the loser of a race may hear: a 409 (illegal transition, state changed, ...).
# Anything else (a database error: deadlock, serialization failure) fails the test.
DECISIONS = [
    ("bob", "approve_release"),
    ("dave", "reject_release"),
    ("erin", "approve_release"),
    ("alice", "cancel_release"),  # cancel vs supersede: both cancel the same release
    ("erin", "takeover_approval"),
]
# A ticket's state once its release has settled in each final state.
TICKET_OF = {"cancelled": "cancelled", "rejected": "rejected", "pending_approval": "pending"}


@pytest.fixture
def pg_world(pg_services: Any) -> World:
    return build_world(pg_services)


def _race(world: World, calls: list[Callable[[], Any]], errors: list[BaseException]) -> None:
    """Start the calls together (a barrier, not a sleep) and keep what each one raised."""
    start = threading.Barrier(len(calls))

    def run(fn: Callable[[], Any]) -> None:
        start.wait()
        try:
            fn()
        except Conflict:
            pass  # a lost race, answered 409
        except BaseException as exc:  # anything else is the bug
            errors.append(exc)

    with ThreadPoolExecutor(len(calls)) as pool:
        list(pool.map(run, calls))


def _chain(world: World, service: str, deadline: float, errors: list[BaseException]) -> list[str]:
    """Submit newer releases of `service` while the older one is being decided."""
    older = deploy(world, "alice", "shop", "prod", **{service: {"image_tag": "1.0.0"}}).id
    call(world, "alice", "submit_release", release_id=older)
    chain = [older]
    decisions = cycle(DECISIONS)
    for n in range(ROUNDS):
        if errors or time.monotonic() > deadline:
            break
        newer = deploy(world, "alice", "shop", "prod", **{service: {"image_tag": f"1.0.{n + 1}"}})
        user, tool = next(decisions)

        def submit(rid: str = newer.id) -> None:
            call(world, "alice", "submit_release", release_id=rid)

        def decide(rid: str = older, user: str = user, tool: str = tool) -> None:
            call(world, user, tool, release_id=rid)

        _race(world, [submit, decide], errors)
        older = newer.id
        chain.append(older)
    return chain


@pytest.mark.postgres
def test_supersede_and_decisions_never_deadlock(
    pg_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []
    deadline = time.monotonic() + BUDGET_S
    # Two chains on one target (web, api) run at once: four writers on the same rows' tables.
    with ThreadPoolExecutor(2) as pool:
        chains = list(pool.map(lambda s: _chain(pg_world, s, deadline, errors), ["web", "api"]))
    assert not errors, [f"{type(e).__name__}: {e}" for e in errors[:3]]
    # Not even a deadlock the tools' retry absorbed: the lock order leaves none to retry.
    assert not [r for r in caplog.records if "retrying" in r.getMessage()], caplog.text
    numbers = [parse_release_id(r) for chain in chains for r in chain]
    assert sum(len(c) for c in chains) > 20  # the races really ran
    with pg_world.services.sessions() as session:
        releases = {
            r.number: r for r in session.scalars(select(Release).where(Release.number.in_(numbers)))
        }
        for chain in chains:
            last = parse_release_id(chain[-1])
            for rid in chain:
                number = parse_release_id(rid)
                state = releases[number].lifecycle_state
                # every older release was superseded, cancelled or rejected; the newest waits
                legal = {"pending_approval"} if number == last else {"cancelled", "rejected"}
                assert state in legal, (rid, state)
                events = list(
                    session.scalars(
                        select(AuditEvent)
                        .where(
                            AuditEvent.release_number == number, AuditEvent.after_state.isnot(None)
                        )
                        .order_by(AuditEvent.seq)
                    )
                )
                # the audit trail walks the release to where it is: each step starts where the
                # last one ended, and the last one ends in its state
                assert events[-1].after_state == state, (rid, [e.action for e in events])
                moves = [e for e in events if e.before_state != e.after_state]
                for before, after in zip(moves, moves[1:], strict=False):
                    assert after.before_state == before.after_state, (rid, before.action)
                ticket = session.scalars(
                    select(ApprovalTicket)
                    .where(ApprovalTicket.release_number == number)
                    .order_by(ApprovalTicket.id.desc())
                ).first()
                assert ticket is not None and ticket.state == TICKET_OF[state], (rid, state)
    assert call(pg_world, "admin", "verify_audit").ok


@pytest.mark.postgres
def test_a_call_the_database_picked_as_deadlock_victim_runs_again(
    pg_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    release = deploy(pg_world, "alice", "shop", "prod", web={"image_tag": "1.5.0"}).id
    call(pg_world, "alice", "submit_release", release_id=release)
    number = parse_release_id(release)
    engine = pg_world.services.engine
    done: dict[str, Any] = {}

    def approve() -> None:
        try:
            done["state"] = call(
                pg_world, "bob", "approve_release", release_id=release
            ).lifecycle_state
        except BaseException as exc:
            done["error"] = exc

    # An outside writer that takes the ticket, then the release: against the product's order,
    # so it deadlocks with the approval. Its long deadlock_timeout leaves the approval's
    # transaction to notice, and be rolled back.
    with engine.connect() as outside, engine.connect() as watcher:
        outside.execute(text("SET LOCAL deadlock_timeout = '30s'"))
        outside.execute(
            text("SELECT id FROM approval_tickets WHERE release_number = :n FOR UPDATE"),
            {"n": number},
        )
        thread = threading.Thread(target=approve)
        thread.start()
        waiting = text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"
        )
        until = time.monotonic() + 20
        while not watcher.execute(waiting).scalar() and time.monotonic() < until:
            watcher.rollback()  # a fresh snapshot of pg_stat_activity each poll
        outside.execute(
            text("SELECT number FROM releases WHERE number = :n FOR UPDATE"), {"n": number}
        )
        outside.commit()
        thread.join(30)
    assert "error" not in done, done
    assert done["state"] == "approved"
    assert any("retrying" in r.getMessage() for r in caplog.records), caplog.text
    assert call(pg_world, "admin", "verify_audit").ok

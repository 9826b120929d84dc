"""Background writers survive being picked as a deadlock victim on PostgreSQL.

The runner, the sweeper, the hub and the notification worker write outside any tool call, so
Tool.run's retry does not cover them. A transaction PostgreSQL rolls back whole (SQLSTATE
40P01 / 40001) is run once more, and the retry is logged. Each race here is made on purpose:
an outside writer takes the audit chain's head first, against the product's lock order, then
asks for the row the background writer already holds. Its long deadlock_timeout leaves the
background writer to notice the deadlock, and be rolled back.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import insert, select, text

from agent.cards import new_id
from agent.hub import Outbox
from agent.models import ChatCard
from core.approvals.tickets import current_ticket, eligible_approvers
from core.db import utcnow
from core.flows.expiry import ExpirySweep
from core.ids import parse_release_id, release_id
from tests.conftest import World, build_world
from tests.support.calls import approved_dev, call, deploy
from tests.support.pg_locks import (
    deadlock_against,
    deadlocked_moving,
    in_worker,
    lock_waiters,
    paused_at,
)


@pytest.fixture
def pg_world(pg_services: Any) -> World:
    return build_world(pg_services)


def _retried(caplog: pytest.LogCaptureFixture, what: str) -> bool:
    return any(
        "retrying" in r.getMessage() and what in r.getMessage() and "40P01" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.postgres
def test_an_apply_result_the_database_rolled_back_is_recorded_again(
    pg_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    rid = approved_dev(pg_world)
    retries = _deadlock_retries()
    # the runner is inline here: the apply runs to its end in the worker
    box = deadlocked_moving(
        pg_world, rid, "applied", lambda: call(pg_world, "alice", "apply_release", release_id=rid)
    )
    assert "error" not in box, box
    release = call(pg_world, "admin", "get_release", release_id=rid)
    # before: the runner's last line of defence recorded "recording the apply result failed"
    # (the log says why: it failed once under a loaded machine, and never again in 20 runs)
    assert release.lifecycle_state == "applied", (release.reason, caplog.text)
    assert _retried(caplog, f"recording the end of {rid}"), caplog.text
    assert _deadlock_retries() > retries  # and operators see it in /metrics
    assert call(pg_world, "admin", "verify_audit").ok


def _deadlock_retries() -> float:
    value = REGISTRY.get_sample_value("shipdeck_db_retries_total", {"sqlstate": "40P01"})
    return value or 0.0


def _card(number: int, user_id: int) -> dict[str, Any]:
    return {
        "id": new_id(),
        "user_id": user_id,
        "kind": "approval",
        "tool": "approve_release",
        "args": {"release_id": release_id(number)},
        "release_number": number,
        "state": "open",
        "created_at": utcnow(),
    }


@pytest.mark.postgres
def test_the_hub_opens_the_cards_of_a_fan_out_the_database_rolled_back(
    pg_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Another writer (a second replica's hub) opens two of the same cards in the other order."""
    hub = pg_world.services.hub
    frames: dict[int, list[dict[str, Any]]] = {}
    release = deploy(pg_world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    number = parse_release_id(release.id)

    def inserting_cards(statement: str, _parameters: Any) -> bool:
        return statement.lstrip().startswith("INSERT INTO chat_cards")

    with paused_at(pg_world, inserting_cards, thread="shipdeck-hub") as (reached, go):
        call(pg_world, "alice", "submit_release", release_id=release.id)
        assert reached.wait(30), "the hub never opened the approval cards"
        with pg_world.services.sessions() as session:
            ticket = current_ticket(session, number)
            assert ticket is not None
            ids = eligible_approvers(session, ticket)  # ascending
        assert len(ids) >= 3
        outboxes = [Outbox(u, str(u), frames.setdefault(u, []).append) for u in ids]
        for outbox in outboxes:
            hub.register(outbox)
        # The hub inserts the cards in user order: the last one waits for ours, and ours
        # for its first.
        deadlock_against(
            pg_world,
            go,
            lambda c: c.execute(insert(ChatCard), [_card(number, ids[-1])]),
            lambda c: c.execute(insert(ChatCard), [_card(number, ids[0])]),
        )
    hub.drain()
    for outbox in outboxes:
        hub.unregister(outbox)
    # the hub takes a release's queued events in one pass: "hub: release_update, approval_..."
    assert _retried(caplog, f"approval_requested of {release.id}"), caplog.text
    with pg_world.services.sessions() as session:
        open_for = session.scalars(
            select(ChatCard.user_id).where(
                ChatCard.release_number == number, ChatCard.state == "open"
            )
        ).all()
    assert sorted(open_for) == ids
    for user_id in ids:  # every approver heard of it; the middle ones' cards opened by the hub
        cards = [f for f in frames[user_id] if f.get("type") == "card"]
        assert cards and cards[-1]["card"]["release_id"] == release.id, frames[user_id]


@pytest.mark.postgres
def test_the_sweeper_expires_again_what_the_database_rolled_back(
    pg_world: World, caplog: pytest.LogCaptureFixture
) -> None:
    release = deploy(pg_world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    call(pg_world, "alice", "submit_release", release_id=release.id)
    number = parse_release_id(release.id)
    with pg_world.services.engine.begin() as connection:
        connection.execute(
            text("UPDATE approval_tickets SET created_at = :t WHERE release_number = :n"),
            {"t": utcnow() - timedelta(hours=73), "n": number},
        )

    def sweep() -> int:
        with pg_world.services.sessions() as session:
            return ExpirySweep().run(session)

    box = deadlocked_moving(pg_world, release.id, "expired", sweep)
    assert box == {"value": 1}, box
    assert call(pg_world, "admin", "get_release", release_id=release.id).lifecycle_state == (
        "expired"
    )
    assert _retried(caplog, f"expiring {release.id}"), caplog.text
    assert call(pg_world, "admin", "verify_audit").ok


@pytest.mark.postgres
def test_a_rollback_locks_the_release_it_undoes_before_its_own(pg_world: World) -> None:
    """Release rows are locked ascending: a rollback (newer) waits for the release it undoes
    (older) before it holds its own row. Before, it updated its own row and then waited for
    the older one, the opposite of every other writer: a deadlock with any of them."""
    first = approved_dev(pg_world, "1.5.0")
    call(pg_world, "alice", "apply_release", release_id=first)
    back = call(pg_world, "alice", "rollback_release", project="shop", environment="dev")
    call(pg_world, "alice", "submit_release", release_id=back.id)
    older, newer = parse_release_id(first), parse_release_id(back.id)
    assert older < newer
    engine = pg_world.services.engine
    box: dict[str, Any] = {}
    lock = "SELECT number FROM releases WHERE number = :n FOR UPDATE"
    with engine.connect() as outside, engine.connect() as watcher:
        outside.execute(text(lock), {"n": older})
        worker = in_worker(
            lambda: call(pg_world, "alice", "apply_release", release_id=back.id), box
        )
        deadline = time.monotonic() + 20
        while not lock_waiters(watcher):
            assert time.monotonic() < deadline, "the rollback never waited for the older row"
        # the rollback waits for the older row and holds nothing of its own yet
        outside.execute(text(lock + " NOWAIT"), {"n": newer})
        outside.commit()
        worker.join(30)
    assert "error" not in box, box
    assert call(pg_world, "admin", "get_release", release_id=back.id).lifecycle_state == "applied"
    assert call(pg_world, "admin", "get_release", release_id=first).lifecycle_state == (
        "rolled_back"
    )
    assert call(pg_world, "admin", "verify_audit").ok

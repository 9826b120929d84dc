"""The apply runner: background jobs, leases, recovery of a dead replica's job."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest

from core.db import utcnow
from core.flows.runner import ApplyRunner
from core.ids import parse_release_id
from tests.conftest import World
from tests.support.calls import approved_dev, call, deploy, sql, wait_for_state


def test_background_runner_applies_after_the_call_returns(world: World) -> None:
    services = world.services
    runner = ApplyRunner(services.sessions, services.runtimes, lease_seconds=30)
    # Slow the simulated rollout so the call returns while the job still runs.
    sql(
        world,
        "UPDATE targets SET connection = :c WHERE environment = 'dev'",
        c='{"delay_seconds": 0.3}',
    )
    release_id = approved_dev(world)
    from core.flows.apply import apply_release

    with services.sessions() as session:
        started = apply_release(
            session,
            actor=world.actor("alice"),
            runtimes=services.runtimes,
            runner=runner,
            release=release_id,
        )
    assert started.lifecycle_state == "applying"
    runner.drain()
    runner.shutdown()
    wait_for_state(world, release_id, {"applied"}, timeout=10)


def test_a_dead_replicas_job_is_recovered_once_its_lease_runs_out(world: World) -> None:
    release_id = approved_dev(world)
    number = int(release_id.removeprefix("R-"))
    # Replica A took the job, then died: the release sits in applying under its lease.
    sql(
        world,
        "UPDATE releases SET lifecycle_state='applying', version=version+1, "
        "claimed_by='dead-replica', lease_expires_at=:t, base_spec='{}' WHERE number=:n",
        t=utcnow() + timedelta(minutes=5),
        n=number,
    )
    runner = world.services.runner
    assert runner.recover() == 0  # lease still valid: not ours to take
    sql(
        world,
        "UPDATE releases SET lease_expires_at=:t WHERE number=:n",
        t=utcnow() - timedelta(seconds=1),
        n=number,
    )
    assert runner.recover() == 1
    wait_for_state(world, release_id, {"applied"}, timeout=10)
    assert runner.recover() == 0
    timeline = call(world, "alice", "release_timeline", release_id=release_id)
    assert [e.message for e in timeline.entries if e.kind == "progress"][0].startswith(
        "rolling out shop/web:1.7.0"
    )


@contextmanager
def refusing_updates_of(world: World, number: int) -> Iterator[None]:
    """A trigger (an outside hand in the database) that fails every update of one release."""
    postgres = world.services.engine.dialect.name == "postgresql"
    if postgres:
        sql(
            world,
            "CREATE FUNCTION refuse_update() RETURNS trigger AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by an outside hand'; END $$ LANGUAGE plpgsql",
        )
        sql(
            world,
            "CREATE TRIGGER refuse_update BEFORE UPDATE ON releases FOR EACH ROW "
            f"WHEN (OLD.number = {number}) EXECUTE FUNCTION refuse_update()",
        )
    else:
        sql(
            world,
            f"CREATE TRIGGER refuse_update BEFORE UPDATE ON releases WHEN OLD.number = {number} "
            "BEGIN SELECT RAISE(ABORT, 'refused by an outside hand'); END",
        )
    try:
        yield
    finally:
        sql(world, "DROP TRIGGER refuse_update" + (" ON releases" if postgres else ""))
        if postgres:
            sql(world, "DROP FUNCTION refuse_update()")


def test_a_release_the_sweeper_cannot_expire_holds_back_nothing_else(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    overdue = []
    for service in ("web", "api"):  # two prod releases of different services: no supersede
        release = deploy(world, "alice", "shop", "prod", **{service: {"image_tag": "9.9.9"}})
        call(world, "alice", "submit_release", release_id=release.id)
        sql(
            world,
            "UPDATE approval_tickets SET created_at = :t WHERE release_number = :n",
            t=(utcnow() - timedelta(hours=73)).replace(tzinfo=None).isoformat(sep=" "),
            n=parse_release_id(release.id),
        )
        overdue.append(release.id)
    orphan = approved_dev(world)  # a dead replica's job, its lease run out
    sql(
        world,
        "UPDATE releases SET lifecycle_state='applying', version=version+1, "
        "claimed_by='dead-replica', lease_expires_at=:t, base_spec='{}' WHERE number=:n",
        t=utcnow() - timedelta(seconds=1),
        n=parse_release_id(orphan),
    )
    stuck, fine = overdue
    with refusing_updates_of(world, parse_release_id(stuck)):
        world.services.runner.sweep()
    state = {r: call(world, "admin", "get_release", release_id=r).lifecycle_state for r in overdue}
    # before: the first failure ended the pass: nothing after it expired, nothing was recovered
    assert state == {stuck: "pending_approval", fine: "expired"}
    assert wait_for_state(world, orphan, {"applied"}, timeout=10) == "applied"
    assert any(
        "could not expire" in r.getMessage() and stuck in r.getMessage() for r in caplog.records
    ), caplog.text

"""The apply runner: background jobs, leases, recovery of a dead replica's job."""

from __future__ import annotations

from datetime import timedelta

from core.db import utcnow
from core.flows.runner import ApplyRunner
from tests.conftest import World
from tests.support.calls import approved_dev, call, sql, wait_for_state


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

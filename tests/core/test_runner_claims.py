"""Apply runs exactly once: heartbeats, the database's clock, fenced writes, terminal failures."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from api.wiring import Services
from core.flows.apply import abandon_release, apply_release
from core.flows.runner import ApplyRunner
from runtimes.base import ApplyResult, Plan, Progress
from runtimes.registry import RuntimeRegistry
from runtimes.sandbox import SandboxAdapter
from tests.conftest import World, build_world
from tests.support.calls import approved_dev, call, sql, wait_for_state

HOSTILE = "💥 " * 5000  # 10,000 characters, 25,000 bytes


def _rollouts(world: World, release_id: str) -> list[str]:
    timeline = call(world, "admin", "release_timeline", release_id=release_id)
    return [
        e.message for e in timeline.entries if e.kind == "progress" and "rolling out" in e.message
    ]


def _start(world: World, runner: ApplyRunner, release_id: str) -> None:
    with world.services.sessions() as session:
        apply_release(
            session,
            actor=world.actor("alice"),
            runtimes=runner.runtimes,
            runner=runner,
            release=release_id,
        )


@pytest.fixture
def pg_world(pg_services: Services) -> World:
    return build_world(pg_services)


@pytest.fixture
def two_replicas(pg_world: World) -> Iterator[tuple[ApplyRunner, ApplyRunner]]:
    services = pg_world.services
    runners = tuple(
        ApplyRunner(services.sessions, services.runtimes, lease_seconds=1) for _ in range(2)
    )
    for runner in runners:
        runner.start_sweeper(interval=0.2)
    yield runners  # type: ignore[misc]
    for runner in runners:
        runner.shutdown()


def test_a_silent_rollout_longer_than_the_lease_runs_once_across_two_replicas(
    pg_world: World, two_replicas: tuple[ApplyRunner, ApplyRunner]
) -> None:
    # The sandbox says "rolling out" once, then is silent for 5 s: 5 leases without progress.
    sql(
        pg_world,
        "UPDATE targets SET connection = :c WHERE environment = 'dev'",
        c='{"delay_seconds": 5}',
    )
    release_id = approved_dev(pg_world)
    _start(pg_world, two_replicas[0], release_id)
    assert wait_for_state(pg_world, release_id, {"applied", "failed"}) == "applied"
    assert len(_rollouts(pg_world, release_id)) == 1
    actions = [
        e.action for e in call(pg_world, "admin", "release_timeline", release_id=release_id).entries
    ]
    assert actions.count("applied") == 1


def test_a_worker_that_lost_its_claim_stops_and_writes_nothing(pg_world: World) -> None:
    services = pg_world.services
    sql(
        pg_world,
        "UPDATE targets SET connection = :c WHERE environment = 'dev'",
        c='{"delay_seconds": 1}',
    )
    runner = ApplyRunner(services.sessions, services.runtimes, lease_seconds=30)
    try:
        release_id = approved_dev(pg_world)
        number = int(release_id.removeprefix("R-"))
        _start(pg_world, runner, release_id)
        # Another replica took the job while this one still ran it.
        sql(
            pg_world, "UPDATE releases SET claimed_by = 'other-replica' WHERE number = :n", n=number
        )
        runner.drain()
    finally:
        runner.shutdown()
    release = call(pg_world, "admin", "get_release", release_id=release_id)
    assert release.lifecycle_state == "applying"  # the new owner finishes it, not us
    timeline = call(pg_world, "admin", "release_timeline", release_id=release_id)
    assert not [e for e in timeline.entries if e.kind == "progress" and "healthy" in e.message]


class ExplodingAdapter(SandboxAdapter):
    """A runtime whose rollout raises with a huge, emoji-laden message (a long log line)."""

    def apply(self, plan: Plan, progress: Progress) -> ApplyResult:
        progress(None, "error", HOSTILE)
        raise RuntimeError(HOSTILE)


def test_a_huge_failure_reason_still_ends_the_release_failed(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    services = world.services
    runtimes = RuntimeRegistry({"sandbox": ExplodingAdapter(services.engine)})
    runner = ApplyRunner(services.sessions, runtimes, inline=True)
    release_id = approved_dev(world)
    with caplog.at_level(logging.INFO):
        _start(world, runner, release_id)
    release = call(world, "admin", "get_release", release_id=release_id)
    assert release.lifecycle_state == "failed"
    assert release.reason.startswith("RuntimeError: 💥")
    assert len(release.reason) <= 2000 and "more characters cut" in release.reason
    assert any(release_id in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)
    target = call(world, "alice", "target_status", project="shop", environment="dev")
    assert target.active_release is None  # the target is free again
    actions = [e.action for e in call(world, "admin", "list_audit", release_id=release_id).items]
    assert "fail" in actions


def test_an_admin_ends_a_stuck_apply_and_the_target_is_free(world: World) -> None:
    release_id = approved_dev(world)
    number = int(release_id.removeprefix("R-"))
    sql(
        world,
        "UPDATE releases SET lifecycle_state='applying', version=version+1, claimed_by='gone', "
        "base_spec='{}' WHERE number=:n",
        n=number,
    )
    with world.services.sessions() as session:
        with pytest.raises(Exception, match="only an admin"):
            abandon_release(session, actor=world.actor("bob"), release=release_id, reason="x")
    with world.services.sessions() as session:
        ended = abandon_release(
            session, actor=world.actor("admin"), release=release_id, reason=HOSTILE
        )
    assert ended.lifecycle_state == "failed"
    assert ended.reason is not None and ended.reason.startswith("abandoned by admin: 💥")
    timeline = call(world, "admin", "release_timeline", release_id=release_id)
    assert [e.action for e in timeline.entries if e.kind == "audit"][-1] == "abandon"
    # a next release may apply on the target
    second = approved_dev(world, tag="1.8.0")
    call(world, "alice", "apply_release", release_id=second)
    assert call(world, "alice", "get_release", release_id=second).lifecycle_state == "applied"

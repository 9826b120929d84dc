"""Exactly-once apply under concurrency, on PostgreSQL's real row locks."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from core.audit.models import AuditEvent
from core.errors import ShipdeckError
from core.releases.models import ProgressEvent
from tests.conftest import World, build_world
from tests.support.calls import call, deploy


@pytest.fixture
def pg_world(pg_services) -> World:
    return build_world(pg_services)


def _approved(world: World, service: str = "web", tag: str = "1.5.0") -> str:
    release = deploy(world, "alice", "shop", "prod", **{service: {"image_tag": tag}})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "bob", "approve_release", release_id=release.id)
    return str(release.id)


def _try(world: World, user: str, tool: str, release_id: str) -> str:
    try:
        return str(call(world, user, tool, release_id=release_id).lifecycle_state)
    except ShipdeckError as exc:
        return exc.code


@pytest.mark.postgres
def test_fifty_concurrent_applies_apply_exactly_once(pg_world: World) -> None:
    release_id = _approved(pg_world)
    with ThreadPoolExecutor(50) as pool:
        outcomes = list(
            pool.map(lambda _: _try(pg_world, "alice", "apply_release", release_id), range(50))
        )
    winners = [o for o in outcomes if o in ("applying", "applied")]
    assert len(winners) == 1, outcomes
    # a loser sees the state moved on (refused up front, or its compare-and-set lost), or
    # (when it read the target after the winner changed it) a live state that no longer
    # matches its preview: either way it applies nothing
    assert set(outcomes) - set(winners) <= {"illegal_transition", "state_changed", "drift_detected"}
    number = int(release_id.removeprefix("R-"))
    with pg_world.services.sessions() as session:
        applies = session.scalar(
            select(func.count()).where(
                AuditEvent.release_number == number, AuditEvent.action == "apply"
            )
        )
        rollouts = session.scalar(
            select(func.count()).where(
                ProgressEvent.release_number == number,
                ProgressEvent.message.like("rolling out%"),
            )
        )
    assert (applies, rollouts) == (1, 1)
    assert (
        call(pg_world, "alice", "get_release", release_id=release_id).lifecycle_state == "applied"
    )
    assert call(pg_world, "admin", "verify_audit").ok


@pytest.mark.postgres
def test_one_release_applies_per_target(pg_world: World) -> None:
    first = _approved(pg_world, "web")
    second = _approved(pg_world, "api", "2.1.0")
    # Hold the first one in `applying`, as a long rollout would.
    from tests.support.calls import sql

    sql(
        pg_world,
        "UPDATE releases SET lifecycle_state='applying' WHERE number=:n",
        n=int(first.removeprefix("R-")),
    )
    # The busy target queues the second release instead of refusing it.
    queued = call(pg_world, "alice", "apply_release", release_id=second)
    assert (queued.lifecycle_state, queued.queue_position) == ("approved", 1)
    assert call(pg_world, "alice", "get_release", release_id=first).lifecycle_state == "applying"


@pytest.mark.postgres
def test_concurrent_decisions_on_one_step_count_once(pg_world: World) -> None:
    release_id = deploy(pg_world, "alice", "shop", "prod", web={"image_tag": "1.5.0"}).id
    call(pg_world, "alice", "submit_release", release_id=release_id)
    with ThreadPoolExecutor(3) as pool:
        outcomes = list(
            pool.map(
                lambda u: _try(pg_world, u, "approve_release", release_id), ["bob", "erin", "dave"]
            )
        )
    assert outcomes.count("approved") == 1, outcomes
    assert call(pg_world, "admin", "verify_audit").ok

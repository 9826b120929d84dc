"""A mutating call the database rolls back after part of it committed ends `interrupted`.

Running it again from the start would repeat steps that stand (and may have been followed by
work outside the database), so it is not retried: the caller gets a 409 that says what stands
and what to do, the call is in the audit chain as interrupted, and the release is left in the
state its last committed step put it in, from which the call can run again.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from core.audit.models import AuditEvent
from core.errors import Interrupted
from tests.conftest import World, build_world
from tests.support.calls import approved_dev, call
from tests.support.pg_locks import (
    deadlocked_moving,
)


@pytest.fixture
def pg_world(pg_services: Any) -> World:
    return build_world(pg_services)


@pytest.mark.postgres
def test_an_apply_rolled_back_after_its_first_commit_is_interrupted_and_audited(
    pg_world: World,
) -> None:
    rid = approved_dev(pg_world)
    # apply_release commits once before it reads the runtime; its move to `applying` is the
    # step the database rolls back here
    box = deadlocked_moving(
        pg_world, rid, "applying", lambda: call(pg_world, "alice", "apply_release", release_id=rid)
    )
    error = box.get("error")
    # before: a raw OperationalError (HTTP 500), and nothing in the audit chain
    assert isinstance(error, Interrupted), box
    assert error.code == "interrupted"
    assert error.details["release_id"] == rid and error.details["sqlstate"] == "40P01"
    assert "What was saved stands" in error.message and rid in error.message
    with pg_world.services.sessions() as session:
        actions = session.scalars(
            select(AuditEvent.data).where(AuditEvent.action == "interrupted")
        ).all()
    assert [a["tool"] for a in actions] == ["apply_release"]
    assert actions[0]["error"] == "interrupted"
    # nothing after the rolled-back step ran: the release waits where it was, and applies
    assert call(pg_world, "admin", "get_release", release_id=rid).lifecycle_state == "approved"
    assert call(pg_world, "alice", "apply_release", release_id=rid).lifecycle_state in (
        "applying",
        "applied",
    )
    assert call(pg_world, "admin", "get_release", release_id=rid).lifecycle_state == "applied"
    assert call(pg_world, "admin", "verify_audit").ok

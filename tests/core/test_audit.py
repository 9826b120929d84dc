"""The audit stream: hash chain, tamper detection, what every action records."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.audit.models import AccessRecord, AuditEvent
from core.errors import ShipdeckError
from tests.conftest import World
from tests.support.calls import call, deploy, sql


def _some_history(world: World) -> str:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "bob", "approve_release", release_id=release.id, comment="ok")
    call(world, "alice", "apply_release", release_id=release.id)
    return str(release.id)


def test_chain_verifies_and_records_actor_channel_and_states(world: World) -> None:
    release_id = _some_history(world)
    result = call(world, "admin", "verify_audit")
    assert result.ok and result.checked == result.last_seq > 5
    events = [
        e
        for e in call(world, "admin", "list_audit", release_id=release_id).items
        if e.action != "read"
    ]
    assert [(e.action, e.actor, e.before_state, e.after_state) for e in reversed(events)] == [
        ("preview", "alice", None, "previewed"),
        ("submit", "alice", "previewed", "pending_approval"),
        ("approve", "bob", "pending_approval", "approved"),
        ("apply", "alice", "approved", "applying"),
        ("applied", "system", "applying", "applied"),
    ]
    assert {e.channel for e in events} == {"rest", "system"}


def test_edited_row_is_named(world: World) -> None:
    _some_history(world)
    sql(world, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
    result = call(world, "admin", "verify_audit")
    assert (result.ok, result.first_broken_seq) == (False, 3)
    assert "changed" in result.reason


def test_edited_payload_is_named(world: World) -> None:
    _some_history(world)
    with world.services.sessions() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.seq == 4)).one()
        event.data = {**event.data, "comment": "forged"}
        session.commit()
    result = call(world, "admin", "verify_audit")
    assert (result.ok, result.first_broken_seq) == (False, 4)


def test_deleted_row_is_named(world: World) -> None:
    _some_history(world)
    sql(world, "DELETE FROM audit_events WHERE seq = 2")
    result = call(world, "admin", "verify_audit")
    assert (result.ok, result.first_broken_seq) == (False, 2)
    assert "missing" in result.reason


def test_deleted_tail_is_detected(world: World) -> None:
    _some_history(world)
    last = call(world, "admin", "verify_audit").last_seq
    sql(world, "DELETE FROM audit_events WHERE seq = :s", s=last)
    result = call(world, "admin", "verify_audit")
    assert (result.ok, result.first_broken_seq) == (False, last)


def test_rechained_forgery_is_detected(world: World) -> None:
    # Rewriting a row AND re-chaining with the product's old (unkeyed) hash breaks its MAC.
    from core.audit.chain import content, legacy_hash

    _some_history(world)
    with world.services.sessions() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.seq == 2)).one()
        event.actor = "mallory"
        event.hash = legacy_hash(content(event))
        session.commit()
    result = call(world, "admin", "verify_audit")
    assert (result.ok, result.first_broken_seq) == (False, 2)


def test_refused_calls_are_recorded_and_change_no_state(world: World) -> None:
    release_id = _some_history(world)
    before = call(world, "admin", "verify_audit").last_seq
    attempts = [
        ("approve_release", {"release_id": release_id}),
        ("cancel_release", {"release_id": release_id}),
        ("submit_release", {"release_id": "R-404"}),
        ("preview_release", {"project": "shop", "environment": "prod", "changes": "web"}),
    ]
    for tool, args in attempts:
        with pytest.raises(ShipdeckError):
            call(world, "bob", tool, **args)
    new = [e for e in call(world, "admin", "list_audit").items if e.seq > before]
    refused = [e for e in new if e.action == "refused"]
    assert [e.data["tool"] for e in reversed(refused)] == [t for t, _ in attempts]
    assert all(e.actor == "bob" for e in refused)
    assert all(e.before_state is None and e.after_state is None for e in new)
    assert call(world, "admin", "verify_audit").ok
    assert call(world, "bob", "get_release", release_id=release_id).lifecycle_state == "applied"


def test_reads_are_recorded_in_the_access_log_not_the_chain(world: World) -> None:
    before = call(world, "admin", "verify_audit").last_seq
    call(world, "victor", "list_targets", project="shop")
    call(world, "victor", "list_releases", project="shop")
    with world.services.sessions() as session:
        reads = session.scalars(select(AccessRecord).order_by(AccessRecord.id)).all()
    assert [(r.actor, r.tool, r.project) for r in reads][-2:] == [
        ("victor", "list_targets", "shop"),
        ("victor", "list_releases", "shop"),
    ]
    assert call(world, "admin", "verify_audit").last_seq == before  # no chain event per read

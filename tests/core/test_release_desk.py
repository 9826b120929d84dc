"""The release desk: approvals that wait for people, stale previews re-previewed in the call,
who decides next and why, the apply queue and retry."""

from __future__ import annotations

import pytest

from core.errors import IllegalTransition, InvalidInput, PermissionDenied, PreviewChanged
from core.flows.retry import retry_release
from core.permissions import SYSTEM
from core.targets.service import load_declaration, parse_declaration
from runtimes.base import ServiceSpec
from runtimes.sandbox import SandboxAdapter
from tests.conftest import WORLD, World
from tests.support.calls import call, deploy, sql


def _number(release_id: str) -> int:
    return int(release_id.removeprefix("R-"))


def _stale(world: World, release_id: str) -> None:
    sql(
        world,
        "UPDATE previews SET expires_at = :t WHERE release_number = :n",
        t="2000-01-01 00:00:00",
        n=_number(release_id),
    )


def _ticket_age(world: World, release_id: str, hours: float) -> None:
    from datetime import timedelta

    from core.db import utcnow

    sql(
        world,
        "UPDATE approval_tickets SET created_at = :t WHERE release_number = :n",
        t=(utcnow() - timedelta(hours=hours)).replace(tzinfo=None).isoformat(sep=" "),
        n=_number(release_id),
    )


def _pending(world: World, project: str = "shop", tag: str = "1.5.0") -> str:
    service = "web" if project == "shop" else "gateway"
    release = deploy(world, "alice", project, "prod", **{service: {"image_tag": tag}})
    call(world, "alice", "submit_release", release_id=release.id)
    return str(release.id)


def _drift(world: World, project: str, environment: str, service: str, image: str) -> None:
    adapter = world.services.runtimes.get("sandbox")
    assert isinstance(adapter, SandboxAdapter)
    adapter.set_live(world.target_id(project, environment), service, ServiceSpec(image=image))


def _hold(world: World, release_id: str) -> None:
    """Hold a target with an applying release another live replica drives."""
    sql(
        world,
        "UPDATE releases SET lifecycle_state='applying', claimed_by='elsewhere', "
        "lease_expires_at='2999-01-01 00:00:00' WHERE number=:n",
        n=_number(release_id),
    )


def _actions(world: World, user: str, release_id: str) -> list[str]:
    return list(call(world, user, "get_release", release_id=release_id).allowed_actions)


# ------------------------------------------------------------------ approvals wait for people


def test_pending_approval_outlives_the_preview_ttl_and_keeps_its_decisions(world: World) -> None:
    release_id = _pending(world, "payment", "7.0.0")
    call(world, "frank", "approve_release", release_id=release_id)  # step 1 of 2
    _stale(world, release_id)
    world.services.runner.sweep()
    waiting = call(world, "carol", "get_release", release_id=release_id)
    assert waiting.lifecycle_state == "pending_approval"
    assert waiting.approval.state == "pending"
    # carol decides on a stale preview: re-previewed in the same call, same diff, step 1 kept.
    done = call(world, "carol", "approve_release", release_id=release_id, comment="ok 🚀")
    assert done.lifecycle_state == "approved"
    assert done.preview.expired is False
    assert done.approval.steps[0].approved_by == ["frank"]
    timeline = call(world, "alice", "release_timeline", release_id=release_id).entries
    actions = [e.action for e in timeline if e.kind == "audit"]
    assert actions[-2:] == ["repreview", "approve"]


def test_a_changed_diff_voids_decisions_and_shows_the_approver_the_new_diff(world: World) -> None:
    release_id = _pending(world, "payment", "7.0.0")
    call(world, "frank", "approve_release", release_id=release_id)
    _stale(world, release_id)
    _drift(world, "payment", "prod", "gateway", "payment/gateway:6.9.9")
    with pytest.raises(PreviewChanged) as raised:
        call(world, "carol", "approve_release", release_id=release_id)
    assert raised.value.details["diff"]["gateway"]["image"]["before"] == "payment/gateway:6.9.9"
    assert raised.value.details["lifecycle_state"] == "previewed"
    after = call(world, "alice", "get_release", release_id=release_id)
    assert after.lifecycle_state == "previewed"
    assert after.approval.state == "void"
    assert after.preview.diff["gateway"]["image"].before == "payment/gateway:6.9.9"


def test_apply_on_a_stale_preview_repreviews_first_and_never_applies_a_changed_one(
    world: World,
) -> None:
    same = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.0"})
    call(world, "alice", "submit_release", release_id=same.id)
    _stale(world, same.id)
    assert call(world, "alice", "apply_release", release_id=same.id).lifecycle_state in (
        "applying",
        "applied",
    )
    changed = deploy(world, "alice", "shop", "dev", api={"image_tag": "2.2.0"})
    call(world, "alice", "submit_release", release_id=changed.id)
    _stale(world, changed.id)
    _drift(world, "shop", "dev", "api", "shop/api:2.1.0")
    with pytest.raises(PreviewChanged):
        call(world, "alice", "apply_release", release_id=changed.id)
    after = call(world, "alice", "get_release", release_id=changed.id)
    assert after.lifecycle_state == "previewed"
    assert after.applied_spec is None


def test_a_forgotten_ticket_times_out_and_the_requester_hears_why(world: World) -> None:
    young = _pending(world, tag="1.5.0")
    old = _pending(world, "payment", "7.0.0")
    _ticket_age(world, young, 71)
    _ticket_age(world, old, 73)
    world.services.runner.sweep()
    assert call(world, "alice", "get_release", release_id=young).lifecycle_state == (
        "pending_approval"
    )
    timed_out = call(world, "alice", "get_release", release_id=old)
    assert timed_out.lifecycle_state == "expired"
    assert timed_out.reason == "approval timed out"
    assert timed_out.approval.state == "expired"
    audit = [
        e
        for e in call(world, "alice", "release_timeline", release_id=old).entries
        if e.action == "expire"
    ]
    assert audit[0].actor == "system" and audit[0].data["reason"] == "approval timed out"
    with pytest.raises(IllegalTransition):
        call(world, "frank", "approve_release", release_id=old)
    # A re-preview starts over: the timed-out ticket never comes back by itself.
    again = call(world, "alice", "repreview_release", release_id=old)
    assert again.lifecycle_state == "previewed"


def test_the_ticket_timeout_is_declared_per_environment(world: World) -> None:
    text = WORLD.replace(
        "- {environment: prod, runtime: sandbox, images:",
        "- {environment: prod, runtime: sandbox, approval_timeout_hours: 1, images:",
    )
    assert text != WORLD
    with world.services.sessions() as session:
        load_declaration(session, actor=SYSTEM, declaration=parse_declaration(text))
    release_id = _pending(world)
    waiting = call(world, "alice", "get_release", release_id=release_id).approval
    assert (waiting.times_out_at - waiting.created_at).total_seconds() == pytest.approx(3600)
    _ticket_age(world, release_id, 2)
    world.services.runner.sweep()
    assert call(world, "alice", "get_release", release_id=release_id).lifecycle_state == "expired"


def test_hostile_timeout_declarations_are_refused() -> None:
    for bad in ("0", "-3", "'soon'", "99999999"):
        text = WORLD.replace(
            "- {environment: staging, runtime: sandbox}",
            f"- {{environment: staging, runtime: sandbox, approval_timeout_hours: {bad}}}",
        )
        with pytest.raises(Exception, match="approval_timeout_hours"):
            parse_declaration(text)


def test_rejecting_a_stale_ticket_needs_no_repreview(world: World) -> None:
    release_id = _pending(world)
    _stale(world, release_id)
    _drift(world, "shop", "prod", "web", "shop/web:1.4.9")
    with pytest.raises(InvalidInput):
        call(world, "bob", "reject_release", release_id=release_id, reason="x" * 10_000)
    rejected = call(world, "bob", "reject_release", release_id=release_id, reason="不行 🚫")
    assert rejected.lifecycle_state == "rejected"


# ------------------------------------------------------------------ who decides next and why


def test_the_ticket_says_which_step_waits_who_can_decide_and_why(world: World) -> None:
    release_id = _pending(world, "payment", "7.0.0")
    first = call(world, "alice", "get_release", release_id=release_id).approval
    assert "prod is high risk: owners, then sre" in first.policy_reason
    assert (first.waiting_step, first.waiting_for, first.deciders) == (1, "owners", ["frank"])
    second = call(world, "frank", "approve_release", release_id=release_id).approval
    assert (second.waiting_step, second.waiting_for) == (2, "sre")
    assert second.deciders == ["carol", "dave"]
    shop = call(world, "alice", "get_release", release_id=_pending(world)).approval
    assert "prod is high risk: approvers" in shop.policy_reason
    assert "alice" not in shop.deciders and "bob" in shop.deciders
    done = call(world, "carol", "approve_release", release_id=release_id).approval
    assert (done.waiting_step, done.waiting_for, done.deciders) == (None, None, [])


# ------------------------------------------------------------------ apply queue


def test_a_busy_target_queues_approved_releases_and_the_runner_applies_them_in_order(
    world: World,
) -> None:
    first = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.0"})
    second = deploy(world, "alice", "shop", "dev", api={"image_tag": "2.1.0"})
    third = deploy(world, "alice", "shop", "dev", worker={"replicas": 2})
    for release in (first, second, third):
        call(world, "alice", "submit_release", release_id=release.id)
    # Hold the target as a long rollout would.
    _hold(world, first.id)
    queued = call(world, "alice", "apply_release", release_id=second.id)
    assert (queued.lifecycle_state, queued.queue_position) == ("approved", 1)
    behind = call(world, "alice", "apply_release", release_id=third.id)
    assert behind.queue_position == 2
    assert call(world, "alice", "apply_release", release_id=third.id).queue_position == 2
    world.services.runner.sweep()  # the target is still busy: nothing moves, nothing expires
    assert call(world, "alice", "get_release", release_id=second.id).queue_position == 1
    # The first job ends (its worker died and its lease ran out): recovery finishes it and the
    # runner hands the target to the queue, in order.
    sql(world, "UPDATE releases SET lease_expires_at=NULL WHERE number=:n", n=_number(first.id))
    world.services.runner.recover()
    world.services.runner.drain()
    states = {
        r.id: (r.lifecycle_state, r.queue_position)
        for r in (
            call(world, "alice", "get_release", release_id=x.id) for x in (first, second, third)
        )
    }
    assert states == {
        first.id: ("applied", None),
        second.id: ("applied", None),
        third.id: ("applied", None),
    }
    applied_order = [
        e.release_id
        for e in call(world, "admin", "list_audit", limit=500).items
        if e.action == "applied"
    ]
    assert sorted(applied_order, key=lambda r: applied_order.index(r)) == applied_order
    audit = call(world, "admin", "list_audit", limit=500).items
    applies = [e.release_id for e in sorted(audit, key=lambda e: e.seq) if e.action == "apply"]
    assert applies == [second.id, third.id]


def test_a_queued_release_whose_diff_changed_leaves_the_queue_with_the_reason(
    world: World,
) -> None:
    first = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.0"})
    second = deploy(world, "alice", "shop", "dev", api={"image_tag": "2.1.0"})
    for release in (first, second):
        call(world, "alice", "submit_release", release_id=release.id)
    _hold(world, first.id)
    call(world, "alice", "apply_release", release_id=second.id)
    _stale(world, second.id)
    _drift(world, "shop", "dev", "api", "shop/api:2.0.5")
    sql(world, "UPDATE releases SET lifecycle_state='failed' WHERE number=:n", n=_number(first.id))
    world.services.runner.sweep()
    after = call(world, "alice", "get_release", release_id=second.id)
    assert after.lifecycle_state == "previewed"
    assert after.queue_position is None
    entries = call(world, "alice", "release_timeline", release_id=second.id).entries
    dequeued = [e for e in entries if e.action == "dequeue"]
    assert dequeued and dequeued[0].data["code"] == "preview_changed"


# ------------------------------------------------------------------ retry


def test_retry_repreviews_a_failed_releases_spec_as_a_new_release(world: World) -> None:
    failed = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.0-broken"})
    call(world, "alice", "submit_release", release_id=failed.id)
    call(world, "alice", "apply_release", release_id=failed.id)
    assert call(world, "alice", "get_release", release_id=failed.id).lifecycle_state == "failed"
    assert "retry" in _actions(world, "alice", failed.id)
    assert "retry" not in _actions(world, "victor", failed.id)
    _drift(world, "shop", "dev", "web", "shop/web:1.4.1")  # someone restored it by hand
    with world.services.sessions() as session:
        retried = retry_release(
            session, actor=world.actor("bob"), runtimes=world.services.runtimes, release=failed.id
        )
        with pytest.raises(PermissionDenied):
            retry_release(
                session,
                actor=world.actor("victor"),
                runtimes=world.services.runtimes,
                release=failed.id,
            )
        with pytest.raises(IllegalTransition, match="retry needs one of: failed"):
            retry_release(
                session,
                actor=world.actor("bob"),
                runtimes=world.services.runtimes,
                release=retried.id,
            )
    assert retried.id != failed.id
    assert retried.retry_of == failed.id
    assert retried.requested_by == "bob"
    assert retried.lifecycle_state == "previewed"
    assert retried.changes == {"web": {"image_tag": "1.6.0-broken"}}

"""Release flows through the tools: preview, submit, apply, expiry, drift, rollback."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.db import utcnow
from core.errors import (
    DriftDetected,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PermissionDenied,
)
from runtimes.base import ServiceSpec
from runtimes.sandbox import SandboxAdapter
from tests.conftest import World
from tests.perf.test_expiry_sweep import run_out
from tests.support.calls import call, deploy, sql


def _live(world: World, project: str, env: str) -> dict[str, ServiceSpec]:
    status = call(world, "alice", "target_status", project=project, environment=env)
    return dict(status.services)


def _approved_prod(world: World, tag: str = "1.5.0") -> str:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": tag})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "bob", "approve_release", release_id=release.id)
    return str(release.id)


def _expire_preview(world: World, release_id: str) -> None:
    sql(
        world,
        "UPDATE previews SET expires_at = :t WHERE release_number = :n",
        t=utcnow() - timedelta(seconds=1),
        n=int(release_id.removeprefix("R-")),
    )


def test_preview_shows_diff_risk_and_expiry_without_touching_the_target(world: World) -> None:
    release = deploy(
        world, "alice", "shop", "prod", web={"image_tag": "2.0.0"}, api={"replicas": 0}
    )
    assert release.id == "R-1"
    assert release.lifecycle_state == "previewed"
    assert release.simulated is True
    assert release.preview.diff["web"]["image"].model_dump() == {
        "before": "shop/web:1.4.1",
        "after": "shop/web:2.0.0",
    }
    assert release.preview.diff["api"]["replicas"].model_dump() == {"before": 1, "after": 0}
    assert release.preview.risk.level == "high"
    assert "api: replicas to 0" in release.preview.risk.reasons
    assert "web: major version jump" in release.preview.risk.reasons
    ttl = (release.preview.expires_at - release.preview.created_at).total_seconds()
    assert ttl == pytest.approx(900)
    assert _live(world, "shop", "prod")["web"].image == "shop/web:1.4.1"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"nope": {"image_tag": "1"}}, "has no service 'nope'"),
        ({"web": {"image_tag": "1.4.1"}}, "nothing to change"),
        ({"web": {}}, "asks for nothing"),
        ({"web": {"image_tag": "1", "image": "x/y:1"}}, "either image or image_tag"),
    ],
)
def test_bad_preview_input_is_refused_and_creates_nothing(
    world: World, changes: dict[str, dict[str, str]], error: str
) -> None:
    with pytest.raises((InvalidInput, NotFound), match=error):
        call(world, "alice", "preview_release", project="shop", environment="prod", changes=changes)
    assert call(world, "alice", "list_releases").items == []


def test_unknown_project_or_environment_is_not_found(world: World) -> None:
    with pytest.raises(NotFound, match="no 'qa' environment"):
        deploy(world, "alice", "shop", "qa", web={"image_tag": "2"})
    with pytest.raises(NotFound, match="no project named 'nope'"):
        deploy(world, "alice", "nope", "prod", web={"image_tag": "2"})


def test_dev_is_approved_on_submit_and_applies(world: World) -> None:
    release = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.5.0"})
    submitted = call(world, "alice", "submit_release", release_id=release.id)
    assert submitted.lifecycle_state == "approved"
    assert submitted.approval is None
    applied = call(world, "alice", "apply_release", release_id=release.id)
    assert applied.lifecycle_state in ("applying", "applied")
    assert call(world, "alice", "get_release", release_id=release.id).lifecycle_state == "applied"
    assert _live(world, "shop", "dev")["web"].image == "shop/web:1.5.0"


def test_prod_needs_approval_before_apply(world: World) -> None:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    submitted = call(world, "alice", "submit_release", release_id=release.id)
    assert submitted.lifecycle_state == "pending_approval"
    assert submitted.approval.steps[0].group == "approvers"
    with pytest.raises(IllegalTransition) as raised:
        call(world, "alice", "apply_release", release_id=release.id)
    assert raised.value.current == "pending_approval"
    call(world, "bob", "approve_release", release_id=release.id)
    call(world, "alice", "apply_release", release_id=release.id)
    final = call(world, "alice", "get_release", release_id=release.id)
    assert final.lifecycle_state == "applied"
    assert final.applied_spec["web"]["image"] == "shop/web:1.5.0"


def test_stale_preview_is_repreviewed_by_apply_and_repreview_restores_approvals(
    world: World,
) -> None:
    release_id = _approved_prod(world)
    _expire_preview(world, release_id)
    world.services.runner.sweep()  # an approved release expires by the TTL
    expired = call(world, "alice", "get_release", release_id=release_id)
    assert expired.lifecycle_state == "expired"
    assert expired.approval.state == "expired"
    again = call(world, "alice", "repreview_release", release_id=release_id)
    assert again.id == release_id
    assert again.lifecycle_state == "approved"  # same diff: approvals kept
    assert again.approval.state == "approved"
    assert again.preview.expired is False
    call(world, "alice", "apply_release", release_id=release_id)
    assert call(world, "alice", "get_release", release_id=release_id).lifecycle_state == "applied"


def test_per_environment_ttl(world: World) -> None:
    sql(world, "UPDATE targets SET preview_ttl_seconds = 60 WHERE environment = 'staging'")
    release = deploy(world, "alice", "shop", "staging", web={"image_tag": "3"})
    ttl = (release.preview.expires_at - release.preview.created_at).total_seconds()
    assert ttl == pytest.approx(60)


def test_sweeper_expires_stale_waiting_releases(world: World) -> None:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    # The TTL runs out now (the sweeper reads previews that ran out since its last pass).
    run_out(world, release.id, utcnow() - timedelta(seconds=1))
    world.services.runner.sweep()
    assert call(world, "alice", "get_release", release_id=release.id).lifecycle_state == "expired"


def test_drift_between_preview_and_apply_is_detected(world: World) -> None:
    release_id = _approved_prod(world)
    adapter = world.services.runtimes.get("sandbox")
    assert isinstance(adapter, SandboxAdapter)
    adapter.set_live(world.target_id("shop", "prod"), "web", ServiceSpec(image="shop/web:1.4.9"))
    with pytest.raises(DriftDetected, match="re-preview"):
        call(world, "alice", "apply_release", release_id=release_id)
    assert call(world, "alice", "get_release", release_id=release_id).lifecycle_state == "approved"
    # The diff changed (before is now 1.4.9): approvals are void, the release starts over.
    again = call(world, "alice", "repreview_release", release_id=release_id)
    assert again.lifecycle_state == "previewed"
    assert again.approval.state == "void"
    assert again.preview.diff["web"]["image"].before == "shop/web:1.4.9"


def test_newer_release_supersedes_pending_one(world: World) -> None:
    old = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    call(world, "alice", "submit_release", release_id=old.id)
    other = deploy(world, "alice", "shop", "prod", worker={"replicas": 3})
    call(world, "alice", "submit_release", release_id=other.id)
    new = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.1"})
    call(world, "alice", "submit_release", release_id=new.id)
    cancelled = call(world, "alice", "get_release", release_id=old.id)
    assert cancelled.lifecycle_state == "cancelled"
    assert cancelled.reason == f"superseded by {new.id}"
    assert cancelled.approval.state == "cancelled"
    timeline = call(world, "alice", "release_timeline", release_id=old.id)
    assert timeline.entries[-1].data["reason"] == f"superseded by {new.id}"
    # A release for other services on the same target is left alone.
    assert call(world, "alice", "get_release", release_id=other.id).lifecycle_state == (
        "pending_approval"
    )


def test_cancel_only_before_apply_and_only_by_requester_or_approver(world: World) -> None:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    with pytest.raises(PermissionDenied):
        call(world, "victor", "cancel_release", release_id=release.id)
    done = call(world, "alice", "cancel_release", release_id=release.id, reason="wrong tag")
    assert (done.lifecycle_state, done.reason) == ("cancelled", "wrong tag")
    with pytest.raises(IllegalTransition):
        call(world, "alice", "cancel_release", release_id=release.id)


def test_unhealthy_rollout_fails_with_reason_and_progress(world: World) -> None:
    release = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.0-broken"})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "alice", "apply_release", release_id=release.id)
    failed = call(world, "alice", "get_release", release_id=release.id)
    assert failed.lifecycle_state == "failed"
    assert "unhealthy" in failed.reason
    timeline = call(world, "alice", "release_timeline", release_id=release.id)
    kinds = [(e.kind, e.action or e.level) for e in timeline.entries]
    assert kinds[-1] == ("audit", "fail")
    assert ("progress", "error") in kinds


def test_rollback_is_previewed_approved_and_restores_the_previous_revision(world: World) -> None:
    first = _approved_prod(world, "1.5.0")
    call(world, "alice", "apply_release", release_id=first)
    assert _live(world, "shop", "prod")["web"].image == "shop/web:1.5.0"
    rollback = call(world, "alice", "rollback_release", project="shop", environment="prod")
    assert rollback.kind == "rollback"
    assert rollback.rollback_of == first
    assert rollback.lifecycle_state == "previewed"
    assert rollback.preview.diff["web"]["image"].after == "shop/web:1.4.1"
    pending = call(world, "alice", "submit_release", release_id=rollback.id)
    assert pending.lifecycle_state == "pending_approval"  # same policy as any prod release
    call(world, "bob", "approve_release", release_id=rollback.id)
    call(world, "alice", "apply_release", release_id=rollback.id)
    assert call(world, "alice", "get_release", release_id=rollback.id).lifecycle_state == "applied"
    assert call(world, "alice", "get_release", release_id=first).lifecycle_state == "rolled_back"
    assert _live(world, "shop", "prod")["web"].image == "shop/web:1.4.1"


def test_rollback_to_a_named_release_and_of_a_failed_one(world: World) -> None:
    good = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.5.0"})
    call(world, "alice", "submit_release", release_id=good.id)
    call(world, "alice", "apply_release", release_id=good.id)
    bad = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.0-unhealthy"})
    call(world, "alice", "submit_release", release_id=bad.id)
    call(world, "alice", "apply_release", release_id=bad.id)
    assert call(world, "alice", "get_release", release_id=bad.id).lifecycle_state == "failed"
    back = call(
        world, "alice", "rollback_release", project="shop", environment="dev", to_release_id=good.id
    )
    assert back.rollback_of == bad.id
    assert back.preview.desired["web"].image == "shop/web:1.5.0"
    call(world, "alice", "submit_release", release_id=back.id)
    call(world, "alice", "apply_release", release_id=back.id)
    assert call(world, "alice", "get_release", release_id=bad.id).lifecycle_state == "rolled_back"
    assert _live(world, "shop", "dev")["web"].image == "shop/web:1.5.0"


def test_nothing_to_roll_back_is_a_clear_error(world: World) -> None:
    with pytest.raises(InvalidInput, match="nothing to roll back"):
        call(world, "alice", "rollback_release", project="shop", environment="prod")


def test_emergency_rollback_uses_the_lighter_policy_never_none(world: World) -> None:
    release = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "2.0.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "frank", "approve_release", release_id=release.id)
    call(world, "carol", "approve_release", release_id=release.id)
    call(world, "alice", "apply_release", release_id=release.id)
    # carol is in sre, the group the emergency policy names: she may declare one
    back = call(
        world, "carol", "rollback_release", project="payment", environment="prod", emergency=True
    )
    pending = call(world, "carol", "submit_release", release_id=back.id)
    assert pending.lifecycle_state == "pending_approval"
    assert [s.group for s in pending.approval.steps] == ["sre"]


def test_apply_on_approval_applies_without_a_second_call(world: World) -> None:
    sql(world, "UPDATE targets SET apply_on_approval = :t WHERE environment = 'prod'", t=True)
    release_id = _approved_prod(world)
    final = call(world, "alice", "get_release", release_id=release_id)
    assert final.lifecycle_state == "applied"
    timeline = call(world, "alice", "release_timeline", release_id=release_id)
    apply = next(e for e in timeline.entries if e.action == "apply")
    assert (apply.actor, apply.on_behalf_of) == ("system", "bob")


def test_release_ids_are_stable_and_listable(world: World) -> None:
    ids = [deploy(world, "alice", "shop", "dev", web={"image_tag": f"7.{i}"}).id for i in range(3)]
    assert ids == ["R-1", "R-2", "R-3"]
    page = call(world, "alice", "list_releases", project="shop", limit=2)
    assert [r.id for r in page.items] == ["R-3", "R-2"]
    rest = call(world, "alice", "list_releases", project="shop", before=page.next_before)
    assert [r.id for r in rest.items] == ["R-1"]
    assert rest.next_before is None
    assert call(world, "alice", "list_releases", state="pending_approval").items == []
    with pytest.raises(InvalidInput):
        call(world, "alice", "list_releases", state="bogus")


def test_releases_filter_by_requester_server_side(world: World) -> None:
    """`me` is the caller; the filter holds past the first page (no newest-50 window)."""
    mine = [deploy(world, "alice", "shop", "dev", web={"image_tag": f"8.{i}"}).id for i in range(3)]
    theirs = [deploy(world, "bob", "shop", "dev", web={"image_tag": f"9.{i}"}).id for i in range(4)]
    page = call(world, "alice", "list_releases", requested_by="me", limit=2)
    assert [r.id for r in page.items] == [mine[2], mine[1]]
    rest = call(world, "alice", "list_releases", requested_by="me", before=page.next_before)
    assert [r.id for r in rest.items] == [mine[0]] and rest.next_before is None
    by_name = call(world, "alice", "list_releases", requested_by="bob", project="shop")
    assert [r.id for r in by_name.items] == theirs[::-1]
    mine_for_bob = call(world, "bob", "list_releases", requested_by="ME").items
    assert [r.id for r in mine_for_bob] == [r.id for r in by_name.items]
    assert call(world, "alice", "list_releases", requested_by="nobody").items == []
    # Another project's viewer sees none of them, even asking by name.
    assert call(world, "frank", "list_releases", requested_by="alice").items == []
    for hostile in ["x" * 10_000, "🚀", "alice' OR 1=1 --", 7]:
        with pytest.raises(InvalidInput):
            call(world, "alice", "list_releases", requested_by=hostile)

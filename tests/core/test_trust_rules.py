"""Holes found off the happy path: emergency, protection by tier, rollback semantics."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.errors import InvalidInput, NotFound, PermissionDenied
from core.identity.models import User
from core.identity.service import actor_for
from core.permissions import SYSTEM
from core.targets.service import load_declaration, parse_declaration
from tests.conftest import World
from tests.support.calls import call, deploy

NEW_TEAM = """
projects:
  - name: ledger
    services: [books]
    owners: [bob]
    requesters: [alice]
    targets:
      - {environment: production, runtime: sandbox, images: {books: ledger/books:1.0.0}}
      - {environment: qa, runtime: sandbox, images: {books: ledger/books:1.0.0}}
"""


def _live(world: World, env: str, service: str) -> tuple[str | None, dict[str, str]]:
    status = call(world, "alice", "target_status", project="shop", environment=env)
    spec = status.services[service]
    return spec.image, dict(spec.env)


def _ship(world: World, env: str = "dev", **changes: dict[str, object]) -> str:
    release = deploy(world, "alice", "shop", env, **changes)
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "alice", "apply_release", release_id=release.id)
    return str(release.id)


# ---------------------------------------------------------------- emergency


def test_emergency_on_a_deploy_is_refused(world: World) -> None:
    with pytest.raises(InvalidInput, match="only to rollbacks"):
        call(
            world,
            "alice",
            "preview_release",
            project="payment",
            environment="prod",
            changes={"gateway": {"image_tag": "9.9.9"}},
            emergency=True,
        )


def test_a_requester_outside_the_emergency_groups_cannot_declare_one(world: World) -> None:
    release = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "2.0.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "frank", "approve_release", release_id=release.id)
    call(world, "carol", "approve_release", release_id=release.id)
    call(world, "alice", "apply_release", release_id=release.id)
    with pytest.raises(PermissionDenied, match="emergency policy names: sre"):
        call(
            world,
            "alice",
            "rollback_release",
            project="payment",
            environment="prod",
            emergency=True,
        )
    ordinary = call(world, "alice", "rollback_release", project="payment", environment="prod")
    pending = call(world, "alice", "submit_release", release_id=ordinary.id)
    assert [s.group for s in pending.approval.steps] == ["owners", "sre"]  # the full policy
    declared = call(
        world, "admin", "rollback_release", project="payment", environment="prod", emergency=True
    )
    assert declared.emergency
    preview = [
        e
        for e in call(world, "admin", "list_audit", release_id=declared.id).items
        if e.action == "preview"
    ][0]
    assert preview.data["emergency"] is True and preview.data["declared_by"] == "admin"


def test_no_emergency_policy_means_no_emergency(world: World) -> None:
    _ship(world, web={"image_tag": "1.5.0"})
    with pytest.raises(InvalidInput, match="no emergency policy"):
        call(world, "admin", "rollback_release", project="shop", environment="dev", emergency=True)


# ---------------------------------------------------------------- protection by tier


def test_a_target_named_production_is_protected_and_found_as_prod(world: World) -> None:
    with world.services.sessions() as session:
        load_declaration(session, actor=SYSTEM, declaration=parse_declaration(NEW_TEAM))
        session.commit()
        for user in session.scalars(select(User)):  # grants changed: fresh actors
            world.actors[user.name] = actor_for(user)
    release = call(
        world,
        "alice",
        "preview_release",
        project="ledger",
        environment="prod",  # the synonym table finds `production`
        changes={"books": {"image_tag": "1.1.0"}},
    )
    assert release.environment == "production"
    assert release.preview.risk.level == "high"  # the tier counts: never "low" there
    submitted = call(world, "alice", "submit_release", release_id=release.id)
    assert submitted.lifecycle_state == "pending_approval"
    low = deploy(world, "alice", "ledger", "qa", books={"image_tag": "1.1.0"})
    assert call(world, "alice", "submit_release", release_id=low.id).lifecycle_state == "approved"
    with pytest.raises(NotFound):
        call(world, "alice", "target_status", project="ledger", environment="staging")


# ---------------------------------------------------------------- rollback semantics


def test_rollback_restores_exactly_the_service_asked_for(world: World) -> None:
    _ship(world, web={"image_tag": "1.5.0"})
    _ship(world, api={"image_tag": "2.1.0"})  # newest release touches api
    back = call(
        world, "alice", "rollback_release", project="shop", environment="dev", services=["web"]
    )
    assert set(back.changes) == {"web"}
    assert back.preview.desired["web"].image == "shop/web:1.4.1"
    call(world, "alice", "submit_release", release_id=back.id)
    call(world, "alice", "apply_release", release_id=back.id)
    assert _live(world, "dev", "web")[0] == "shop/web:1.4.1"
    assert _live(world, "dev", "api")[0] == "shop/api:2.1.0"  # untouched


def test_rollback_removes_variables_the_release_added(world: World) -> None:
    _ship(world, web={"env": {"FEATURE_X": "on"}})
    back = call(world, "alice", "rollback_release", project="shop", environment="dev")
    call(world, "alice", "submit_release", release_id=back.id)
    call(world, "alice", "apply_release", release_id=back.id)
    assert "FEATURE_X" not in _live(world, "dev", "web")[1]


def test_rollback_after_a_rollback_never_proposes_an_image_that_only_failed(world: World) -> None:
    _ship(world, web={"image_tag": "1.5.0"})
    failed = _ship(world, web={"image_tag": "1.6.0-broken"})
    assert call(world, "alice", "get_release", release_id=failed).lifecycle_state == "failed"
    first = call(world, "alice", "rollback_release", project="shop", environment="dev")
    assert first.preview.desired["web"].image == "shop/web:1.5.0"
    call(world, "alice", "submit_release", release_id=first.id)
    call(world, "alice", "apply_release", release_id=first.id)
    again = call(world, "alice", "rollback_release", project="shop", environment="dev")
    assert again.preview.desired["web"].image == "shop/web:1.4.1"  # one good revision further


def test_rollback_to_a_release_restores_the_whole_target_as_of_then(world: World) -> None:
    anchor = _ship(world, web={"image_tag": "1.5.0"})
    _ship(world, api={"image_tag": "2.1.0"})
    _ship(world, web={"image_tag": "1.6.0"})
    back = call(
        world, "alice", "rollback_release", project="shop", environment="dev", to_release_id=anchor
    )
    assert back.preview.desired["web"].image == "shop/web:1.5.0"
    assert back.preview.desired["api"].image == "shop/api:2.0.0"  # as it ran right after anchor


GHOST = "ghost-" + "x" * 58  # the longest name a service can have, and none of shop's


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("preview_release", {"environment": "dev", "changes": {GHOST: {"image_tag": "1"}}}),
        ("rollback_release", {"environment": "dev", "services": [GHOST]}),
        (
            "promote_release",
            {"from_environment": "dev", "to_environment": "staging", "services": ["web", GHOST]},
        ),
        ("diagnose_target", {"environment": "dev", "service": GHOST}),
    ],
)
def test_an_unknown_service_is_not_found_and_names_the_known_ones(
    world: World, tool: str, args: dict[str, object]
) -> None:
    """One answer whichever tool names the service (a preview's was a tools-level check, a
    rollback's and a promotion's an InvalidInput, a diagnosis's listed them under `known`)."""
    _ship(world, web={"image_tag": "1.5.0"})
    with pytest.raises(NotFound) as refused:
        call(world, "alice", tool, project="shop", **args)
    assert refused.value.message == f"project shop has no service {GHOST!r}"
    assert refused.value.details == {"service": GHOST, "known_services": ["api", "web", "worker"]}

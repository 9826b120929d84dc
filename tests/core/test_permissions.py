"""The permission matrix: each role, scoped to a project, against each kind of action."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from core.errors import NotFound, PermissionDenied
from core.identity.service import add_user, authenticate
from core.permissions import SYSTEM, Role
from tests.conftest import World
from tests.support.calls import call, deploy

ROLES = ["viewer", "requester", "approver", "admin", "outsider"]


def _pending_by_alice(world: World) -> str:
    release = deploy(world, "alice", "shop", "dev", worker={"replicas": 2})
    # dev needs no approval by default: give shop/dev a one-step policy for this check.
    from tests.support.calls import sql

    sql(world, "DELETE FROM policy_rules")
    sql(
        world,
        "INSERT INTO policy_rules (project_id, environment, risk_tier, emergency, position, steps) "
        "SELECT id, 'dev', NULL, :f, 0, :steps FROM projects WHERE name='shop'",
        f=False,
        steps='[{"group": "approvers", "count": 1}]',
    )
    call(world, "alice", "submit_release", release_id=release.id)
    return str(release.id)


ACTIONS: dict[str, Callable[[World, str], object]] = {
    "view_status": lambda w, u: call(w, u, "target_status", project="shop", environment="dev"),
    "view_release": lambda w, u: call(
        w, u, "get_release", release_id=deploy(w, "alice", "shop", "dev", web={"replicas": 3}).id
    ),
    "preview": lambda w, u: deploy(w, u, "shop", "dev", web={"image_tag": "5.0.0"}),
    "approve": lambda w, u: call(w, u, "approve_release", release_id=_pending_by_alice(w)),
    "verify_audit": lambda w, u: call(w, u, "verify_audit"),
}

ALLOWED = {
    "viewer": {"view_status", "view_release", "verify_audit"},
    "requester": {"view_status", "view_release", "preview", "verify_audit"},
    "approver": {"view_status", "view_release", "preview", "approve", "verify_audit"},
    "admin": set(ACTIONS),
    "outsider": {"verify_audit"},  # holds a role on payment only
}


def _user(world: World, role: str) -> str:
    name = f"u-{role}"
    with world.services.sessions() as session:
        if role == "outsider":
            token = add_user(session, actor=SYSTEM, name=name, role=Role.admin, project="payment")
        elif role == "admin":
            token = add_user(session, actor=SYSTEM, name=name, role=Role.admin)
        else:
            token = add_user(session, actor=SYSTEM, name=name, role=Role(role), project="shop")
        actor = authenticate(session, token)
    assert actor is not None
    world.actors[name] = actor
    return name


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_permission_matrix(world: World, role: str, action: str) -> None:
    user = _user(world, role)
    if action in ALLOWED[role]:
        ACTIONS[action](world, user)
    else:
        # a project the user has no role on answers like a nonexistent one (not found or
        # not yours): its existence does not leak
        refused = (PermissionDenied, NotFound) if role == "outsider" else PermissionDenied
        with pytest.raises(refused):
            ACTIONS[action](world, user)

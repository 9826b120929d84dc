"""`allowed_actions` agrees with the calls: a listed action is never refused for permission or
state, an unlisted one always is. Random (state, user, action) triples on both databases."""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Callable
from typing import Any

import pytest

from core.errors import Conflict, NotFound, PermissionDenied, ShipdeckError
from core.flows.actions import ACTIONS
from core.flows.apply import abandon_release
from core.flows.retry import retry_release
from tests.conftest import World
from tests.support.calls import call, deploy, sql

USERS = ("alice", "bob", "erin", "carol", "victor", "frank", "admin")
REFUSED = (PermissionDenied, Conflict, NotFound)  # not yours answers like not found
_tags = itertools.count(100)


def _tag() -> str:
    return f"9.{next(_tags)}.0"


def _n(release_id: str) -> int:
    return int(release_id.removeprefix("R-"))


def _previewed(world: World) -> str:
    return str(deploy(world, "alice", "shop", "dev", web={"image_tag": _tag()}).id)


def _pending(world: World, user: str = "alice") -> str:
    release = deploy(world, user, "shop", "prod", web={"image_tag": _tag()})
    call(world, user, "submit_release", release_id=release.id)
    return str(release.id)


def _pending_by_bob(world: World) -> str:
    return _pending(world, "bob")


def _pending_payment(world: World) -> str:
    release = deploy(world, "alice", "payment", "prod", gateway={"image_tag": _tag()})
    call(world, "alice", "submit_release", release_id=release.id)
    return str(release.id)


def _approved(world: World) -> str:
    release_id = _pending(world)
    call(world, "erin", "approve_release", release_id=release_id)
    return release_id


def _applied(world: World) -> str:
    release = deploy(world, "alice", "shop", "dev", api={"image_tag": _tag()})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "alice", "apply_release", release_id=release.id)
    return str(release.id)


def _failed(world: World) -> str:
    release = deploy(world, "alice", "shop", "dev", api={"image_tag": _tag() + "-broken"})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "alice", "apply_release", release_id=release.id)
    return str(release.id)


def _rejected(world: World) -> str:
    release_id = _pending(world)
    call(world, "erin", "reject_release", release_id=release_id, reason="no")
    return release_id


def _cancelled(world: World) -> str:
    release_id = _previewed(world)
    call(world, "alice", "cancel_release", release_id=release_id)
    return release_id


def _expired(world: World) -> str:
    release_id = _approved(world)
    sql(
        world,
        "UPDATE previews SET expires_at = '2000-01-01 00:00:00' WHERE release_number = :n",
        n=_n(release_id),
    )
    world.services.runner.sweep()
    return release_id


def _applying(world: World) -> str:
    release = deploy(world, "alice", "shop", "staging", worker={"replicas": next(_tags)})
    call(world, "alice", "submit_release", release_id=release.id)
    sql(
        world,
        "UPDATE releases SET lifecycle_state='applying', claimed_by='elsewhere', "
        "lease_expires_at='2999-01-01 00:00:00' WHERE number=:n",
        n=_n(release.id),
    )
    return str(release.id)


SCENARIOS: dict[str, Callable[[World], str]] = {
    "previewed": _previewed,
    "pending": _pending,
    "pending_by_bob": _pending_by_bob,
    "pending_payment": _pending_payment,
    "approved": _approved,
    "applied": _applied,
    "failed": _failed,
    "rejected": _rejected,
    "cancelled": _cancelled,
    "expired": _expired,
    "applying": _applying,
}


def _do(world: World, user: str, action: str, release_id: str) -> Any:
    actor = world.actor(user)
    services = world.services
    if action in ("submit", "cancel", "apply", "repreview"):
        return call(world, user, f"{action}_release", release_id=release_id)
    if action in ("approve", "reject"):
        return call(world, user, f"{action}_release", release_id=release_id)
    if action == "takeover":
        return call(world, user, "takeover_approval", release_id=release_id)
    if action == "rollback":
        with services.sessions() as session:
            from core.releases.queries import load_release

            found = load_release(session, release_id)
            project, environment = found.project.name, found.target.environment
            names = sorted(found.changes)
        return call(
            world,
            user,
            "rollback_release",
            project=project,
            environment=environment,
            services=names,
        )
    with services.sessions() as session:
        if action == "retry":
            return retry_release(
                session, actor=actor, runtimes=services.runtimes, release=release_id
            )
        return abandon_release(session, actor=actor, release=release_id, reason="dead 💀")


def _triples(seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    triples = []
    for action in ACTIONS:  # every action three times, against random states and users
        for _ in range(3):
            triples.append((rng.choice(sorted(SCENARIOS)), rng.choice(USERS), action))
    return triples


def test_allowed_actions_match_what_the_calls_permit(world: World) -> None:
    seed = int(os.environ.get("SHIPDECK_ACTIONS_SEED", "12"))
    mismatches = []
    for scenario, user, action in _triples(seed):
        release_id = SCENARIOS[scenario](world)
        try:
            listed = call(world, user, "get_release", release_id=release_id).allowed_actions
        except (PermissionDenied, NotFound):  # a release the user cannot see
            listed = []
        assert set(listed) <= set(ACTIONS)
        try:
            _do(world, user, action, release_id)
            outcome: str | None = None
        except REFUSED as exc:
            outcome = f"{type(exc).__name__}: {exc.message}"
        except ShipdeckError:
            outcome = None  # refused for another reason (input, runtime): not permission/state
        # Rollback is a call on the target, not on a release state: only its permission counts.
        state_free = action == "rollback" and scenario not in ("applied", "failed")
        if action in listed and outcome is not None:
            mismatches.append((scenario, user, action, "listed but refused", outcome))
        if action not in listed and outcome is None and not state_free:
            mismatches.append((scenario, user, action, "not listed but allowed", listed))
        sql(  # free the staging target held by the `applying` scenario
            world,
            "UPDATE releases SET lifecycle_state='failed' WHERE lifecycle_state='applying'",
        )
    assert mismatches == [], f"seed {seed}: {mismatches}"


def test_allowed_actions_name_the_obvious_cases(world: World) -> None:
    pending = _pending(world)
    assert call(world, "alice", "get_release", release_id=pending).allowed_actions == [
        "cancel",
        "repreview",
    ]
    assert call(world, "bob", "get_release", release_id=pending).allowed_actions == [
        "cancel",
        "repreview",
        "approve",
        "reject",
        "takeover",
    ]
    assert call(world, "victor", "get_release", release_id=pending).allowed_actions == []
    applying = _applying(world)
    assert call(world, "admin", "get_release", release_id=applying).allowed_actions == ["abandon"]
    with pytest.raises(NotFound):  # another project's release: answered like a missing one
        call(world, "frank", "get_release", release_id=pending)

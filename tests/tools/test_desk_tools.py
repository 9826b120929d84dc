"""The release desk's registry tools: retry, promote, declare/lift/list freezes (SQLite, PG)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.db import utcnow
from core.errors import InvalidInput, NotFound, PermissionDenied, ShipdeckError
from tests.conftest import World
from tests.support.calls import approved_dev, call, sql
from tools.registry import REGISTRY


def _in(days: int = 3) -> str:
    return (utcnow() + timedelta(days=days)).date().isoformat()


def test_desk_tools_are_in_the_registry_with_the_right_flags() -> None:
    flags = {name: REGISTRY[name].mutating for name in REGISTRY}
    assert flags["retry_release"] and flags["promote_release"]
    assert flags["declare_freeze"] and flags["lift_freeze"]
    assert flags["list_freezes"] is False


def test_a_freeze_reads_a_wall_clock_time_in_the_zone_given_or_a_span(world: World) -> None:
    day = _in()
    made = call(
        world,
        "carol",
        "declare_freeze",
        project="shop",
        environment="prod",
        until=f"{day}T09:00",
        timezone="Asia/Shanghai",
        reason="incident 42 🔥",
    )
    assert made.until == datetime.fromisoformat(f"{day}T01:00").replace(tzinfo=UTC)
    assert made.active and made.created_by == "carol" and made.environment == "prod"
    span = call(
        world, "dave", "declare_freeze", project="shop", duration_minutes=120, reason="migration"
    )
    assert span.environment is None
    assert timedelta(minutes=119) < span.until - utcnow() <= timedelta(minutes=120)
    listed = call(world, "victor", "list_freezes", project="shop")
    assert [f.id for f in listed.items] == [span.id, made.id]
    assert call(world, "frank", "list_freezes").items == []  # not his project


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"duration_minutes": 60}, InvalidInput),  # no reason
        ({"reason": "x"}, InvalidInput),  # no end
        ({"reason": "x", "duration_minutes": 60, "until": "2030-01-01T00:00"}, InvalidInput),
        ({"reason": "x" * 10_000, "duration_minutes": 60}, InvalidInput),
        ({"reason": "x", "duration_minutes": "soon"}, InvalidInput),
        ({"reason": "x", "until": "2020-01-01T00:00+00:00"}, InvalidInput),  # the past
        ({"reason": "x", "until": "2099-01-01T00:00+00:00"}, InvalidInput),  # > 90 days
        ({"reason": "x", "until": "2030-01-01T00:00", "timezone": "Mars/Olympus"}, InvalidInput),
        ({"reason": "x", "duration_minutes": 60, "environment": "🚀" * 20}, InvalidInput),
    ],
)
def test_hostile_freezes_are_refused(world: World, args: dict[str, object], error: type) -> None:
    with pytest.raises(error):
        call(world, "carol", "declare_freeze", project="shop", **args)
    assert call(world, "admin", "list_freezes").items == []


def test_only_admins_and_sre_freeze_and_another_projects_freeze_is_not_found(
    world: World,
) -> None:
    with pytest.raises(PermissionDenied):
        call(world, "alice", "declare_freeze", project="shop", duration_minutes=5, reason="x")
    with pytest.raises(NotFound):  # frank owns payment only: shop does not exist for him
        call(world, "frank", "declare_freeze", project="shop", duration_minutes=5, reason="x")
    made = call(world, "carol", "declare_freeze", project="shop", duration_minutes=5, reason="x")
    with pytest.raises(NotFound):
        call(world, "frank", "lift_freeze", freeze_id=made.id)
    with pytest.raises(NotFound):  # the id of a shop freeze, named as payment's
        call(world, "admin", "lift_freeze", project="payment", freeze_id=made.id)
    assert call(world, "admin", "list_freezes", project="shop").items[0].active


def test_lifting_an_environment_leaves_a_project_wide_freeze_and_says_so(world: World) -> None:
    call(world, "carol", "declare_freeze", project="shop", duration_minutes=60, reason="all")
    prod = call(
        world,
        "carol",
        "declare_freeze",
        project="shop",
        environment="prod",
        duration_minutes=60,
        reason="incident",
    )
    lifted = call(world, "dave", "lift_freeze", project="shop", environment="prod")
    assert [f.id for f in lifted.items] == [prod.id] and not lifted.items[0].active
    assert lifted.still_frozen and "frozen until" in lifted.still_frozen[0]
    again = call(world, "dave", "lift_freeze", project="shop", environment="prod")
    assert again.items == []  # nothing left to lift on prod itself: no error
    whole = call(world, "admin", "lift_freeze", project="shop")
    assert len(whole.items) == 1 and call(world, "admin", "list_freezes").items == []


def test_promote_defaults_its_source_to_the_previous_environment_in_the_order(
    world: World,
) -> None:
    rid = approved_dev(world, "1.7.0")
    call(world, "alice", "apply_release", release_id=rid)
    world.services.runner.drain()
    with pytest.raises(InvalidInput, match="from_environment"):  # no order declared yet
        call(world, "alice", "promote_release", project="shop", to_environment="staging")
    sql(world, 'UPDATE projects SET promotion = \'["dev", "staging", "prod"]\' WHERE name=\'shop\'')
    made = call(world, "alice", "promote_release", project="shop", to_environment="staging")
    assert made.environment == "staging" and made.changes == {"web": {"image": "shop/web:1.7.0"}}
    assert made.lifecycle_state == "previewed"
    with pytest.raises(ShipdeckError):  # dev comes first: nothing before it
        call(world, "alice", "promote_release", project="shop", to_environment="dev")
    with pytest.raises(PermissionDenied):
        call(world, "victor", "promote_release", project="shop", to_environment="staging")


def test_retry_previews_a_failed_release_again(world: World) -> None:
    rid = approved_dev(world, "1.7.0-broken")
    call(world, "alice", "apply_release", release_id=rid)
    world.services.runner.drain()
    assert call(world, "alice", "get_release", release_id=rid).lifecycle_state == "failed"
    sql(world, "UPDATE sandbox_services SET image='shop/web:1.4.1' WHERE service='web'")
    retried = call(world, "alice", "retry_release", release_id=rid)
    assert retried.retry_of == rid and retried.lifecycle_state == "previewed"
    with pytest.raises(NotFound):  # frank cannot see shop's releases
        call(world, "frank", "retry_release", release_id=rid)

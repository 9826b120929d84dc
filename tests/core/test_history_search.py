"""Release history search: service, time range and free text, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from core.db import utcnow
from core.errors import InvalidInput
from core.flows import views
from tests.conftest import World
from tests.support.calls import call, deploy, sql


def _ids(world: World, user: str = "alice", **filters: object) -> set[str]:
    return {r.id for r in call(world, user, "list_releases", limit=200, **filters).items}


@pytest.fixture
def history(world: World) -> dict[str, str]:
    """Six releases: different services, versions, requesters and hostile reasons."""
    made = {
        "web": deploy(world, "alice", "shop", "prod", web={"image_tag": "1.6.0-RC1"}),
        "api": deploy(world, "alice", "shop", "dev", api={"image_tag": "2.5.0"}),
        "both": deploy(
            world, "alice", "shop", "staging", web={"image_tag": "7.0.0"}, api={"replicas": 2}
        ),
        "pct": deploy(world, "alice", "shop", "dev", web={"image_tag": "3.0.0"}),
        "under": deploy(world, "alice", "shop", "dev", worker={"image_tag": "3.1.0"}),
        "plain": deploy(world, "bob", "shop", "staging", worker={"image_tag": "921"}),
        "gateway": deploy(world, "alice", "payment", "prod", gateway={"image_tag": "1.6.0"}),
    }
    reasons = {
        "pct": "rolled to 100% 🚀'; DROP TABLE releases; --",
        "under": "flag a_b off",
        "plain": "flag a-b off",
    }
    for key, reason in reasons.items():
        call(
            world, made[key].requested_by, "cancel_release", release_id=made[key].id, reason=reason
        )
    return {key: release.id for key, release in made.items()}


def test_service_filter_matches_whole_service_names(world: World, history: dict[str, str]) -> None:
    assert _ids(world, service="api") == {history["api"], history["both"]}
    assert _ids(world, service="web") == {history["web"], history["both"], history["pct"]}
    assert _ids(world, service="we_") == set()  # `_` is not a LIKE wildcard
    assert _ids(world, service="gateway") == {history["gateway"]}
    assert _ids(world, "victor", service="gateway") == set()  # not victor's project


def test_text_search_finds_versions_ids_reasons_and_requesters(
    world: World, history: dict[str, str]
) -> None:
    assert _ids(world, text="1.6.0-rc") == {history["web"]}  # case-insensitive
    assert _ids(world, text="1.6.0") == {history["web"], history["gateway"]}
    assert _ids(world, "victor", text="1.6.0") == {history["web"]}
    assert _ids(world, text=history["under"].lower()) == {history["under"]}
    assert history["under"] in _ids(world, text=history["under"].removeprefix("R-"))
    assert _ids(world, text="bob") == {history["plain"]}
    assert _ids(world, text="🚀") == {history["pct"]}
    # The change's field names are not what anyone searches for.
    assert _ids(world, text="image_tag") == set()
    assert _ids(world, text="replicas") == set()


def test_text_search_takes_wildcards_and_sql_literally(
    world: World, history: dict[str, str]
) -> None:
    assert _ids(world, text="%") == {history["pct"]}
    assert _ids(world, text="100%") == {history["pct"]}
    assert _ids(world, text="a_b") == {history["under"]}
    assert _ids(world, text="_") == {history["under"]}
    assert _ids(world, text="9_1") == set()  # would match "921" as a wildcard
    assert _ids(world, text="\\") == set()
    assert _ids(world, text="'; drop table releases; --") == {history["pct"]}
    assert _ids(world, text="' OR 1=1 --") == set()
    assert _ids(world, text='"web"') == set()
    assert _ids(world, text="   ") == set(history.values())  # blank: no filter
    assert len(_ids(world)) == 7  # the table is still there


def test_overlong_text_is_refused_not_searched(world: World, history: dict[str, str]) -> None:
    with pytest.raises(InvalidInput):
        call(world, "alice", "list_releases", text="🚀" * 10_000)
    with world.services.sessions() as session, pytest.raises(InvalidInput, match="200"):
        views.list_releases(session, actor=world.actor("alice"), text="x" * 10_000)
    assert _ids(world, text="🚀" * 200) == set()


def test_time_range_bounds_creation_time(world: World, history: dict[str, str]) -> None:
    number = int(history["web"].removeprefix("R-"))
    sql(
        world,
        "UPDATE releases SET created_at = :t WHERE number = :n",
        t=utcnow() - timedelta(days=3),
        n=number,
    )
    day_ago = utcnow() - timedelta(days=1)
    assert history["web"] not in _ids(world, since=day_ago.isoformat())
    assert _ids(world, until=day_ago.isoformat()) == {history["web"]}
    earlier = (day_ago - timedelta(days=3)).isoformat()
    assert _ids(world, since=earlier, until=day_ago.isoformat()) == {history["web"]}
    with pytest.raises(InvalidInput):
        call(world, "alice", "list_releases", since="2026-01-01T00:00:00")  # no zone
    empty = {"since": day_ago.isoformat(), "until": day_ago.isoformat()}
    assert _ids(world, **empty) == set()  # an empty range, not an error
    for bad in ("0", "1700000000", "2026-01-01", "2026-01-01T00:00Z", "yesterday"):
        with pytest.raises(InvalidInput):  # a number or a day alone is not a time
            call(world, "alice", "list_releases", until=bad)


def test_filtered_history_keeps_keyset_paging(world: World, history: dict[str, str]) -> None:
    first = call(world, "alice", "list_releases", text="shop/", limit=1)
    assert first.items == []  # the target is not part of the text
    first = call(world, "alice", "list_releases", service="web", limit=2)
    second = call(world, "alice", "list_releases", service="web", limit=2, before=first.next_before)
    assert [r.id for r in first.items] == [history["pct"], history["both"]]
    assert [r.id for r in second.items] == [history["web"]]
    assert second.next_before is None

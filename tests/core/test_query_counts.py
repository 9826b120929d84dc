"""Pages cost a fixed number of SQL statements, not one (or two) per row."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.conftest import World
from tests.support import engine_events
from tests.support.calls import call, deploy


@contextmanager
def counted(world: World) -> Iterator[list[str]]:
    """Every statement this thread sends while the block runs (not other threads' work)."""
    statements: list[str] = []
    me = threading.get_ident()

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == me:
            statements.append(statement)

    engine_events.listen(world.services.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        engine_events.remove(world.services.engine, "before_cursor_execute", record)


def _history(world: World, rows: int) -> None:
    """`rows` releases on shop prod: rejected (ticket + decision), approved, and bare previews."""
    for i in range(rows):
        release = deploy(world, "alice", "shop", "prod", web={"image_tag": f"9.{i}"})
        if i % 3 == 2:
            continue  # superseded by the next preview: no ticket
        call(world, "alice", "submit_release", release_id=release.id)
        if i % 3 == 0:
            call(world, "bob", "reject_release", release_id=release.id, reason="🚀 no " * 50)
        else:
            call(world, "erin", "approve_release", release_id=release.id)


def test_release_and_inbox_pages_do_not_grow_with_the_page(world: World) -> None:
    for environment in ("dev", "staging"):  # releases on three targets, all frozen
        deploy(world, "alice", "shop", environment, web={"image_tag": "8.0"})
    _history(world, 48)  # 50 releases in all: the large page holds every target
    call(world, "carol", "declare_freeze", project="shop", duration_minutes=30, reason="🧊")
    with counted(world) as small:
        two = call(world, "bob", "list_releases", limit=2)
    with counted(world) as large:
        fifty = call(world, "bob", "list_releases", limit=50)
    assert len(two.items) == 2 and len(fifty.items) == 50
    assert sum(r.approval is not None for r in fifty.items) >= 30
    assert any(r.approval and r.approval.decisions for r in fifty.items)
    assert all(r.frozen is not None and r.frozen.reason == "🧊" for r in fifty.items)
    assert {r.environment for r in fifty.items} == {"dev", "staging", "prod"}
    assert len(large) == len(small), large
    # The inbox was already batched; keep it that way.
    with counted(world) as small:
        two_tickets = call(world, "bob", "list_approvals", limit=2)
    with counted(world) as large:
        tickets = call(world, "bob", "list_approvals", limit=50)
    assert len(two_tickets.items) == 2 and len(tickets.items) == 32
    assert all(t.frozen is not None for t in tickets.items)
    assert len(large) == len(small), large


def test_release_page_views_match_one_release_views(world: World) -> None:
    _history(world, 6)
    deploy(world, "alice", "shop", "dev", web={"image_tag": "2.0.0"})
    pending = deploy(world, "alice", "shop", "prod", web={"image_tag": "3.0.0"})
    call(world, "alice", "submit_release", release_id=pending.id)
    for user in ("erin", "alice", "victor", "admin"):
        page = call(world, user, "list_releases", limit=50)
        for item in page.items:
            one = call(world, user, "get_release", release_id=item.id)
            assert item.model_dump(exclude={"preview": {"expired"}}) == one.model_dump(
                exclude={"preview": {"expired"}}
            )
    erin = {r.id: r for r in call(world, "erin", "list_releases").items}
    assert erin[pending.id].approval is not None and erin[pending.id].approval.can_decide
    alice = {r.id: r for r in call(world, "alice", "list_releases").items}
    assert not alice[pending.id].approval.can_decide  # her own


def test_searched_history_costs_what_plain_history_costs(world: World) -> None:
    _history(world, 12)
    with counted(world) as plain:
        everything = call(world, "bob", "list_releases", limit=50)
    filters = {"service": "web", "text": "9.", "since": "2020-01-01T00:00:00Z"}
    with counted(world) as searched:
        found = call(world, "bob", "list_releases", limit=50, **filters)
    assert len(found.items) == len(everything.items) == 12
    assert len(searched) == len(plain), searched


def _open_tickets(world: World, targets: list[tuple[str, str, str]]) -> None:
    for project, environment, service in targets:
        changes = {service: {"image_tag": "8.0"}}
        release = deploy(world, "alice", project, environment, **changes)
        call(world, "alice", "submit_release", release_id=release.id)


def test_who_may_decide_is_loaded_once_per_page_not_per_open_ticket(world: World) -> None:
    _open_tickets(world, [("shop", "prod", "web")])
    with counted(world) as one_inbox:
        one = call(world, "admin", "list_approvals")
    with counted(world) as one_page:
        call(world, "admin", "list_releases")
    _open_tickets(world, [("payment", "prod", "gateway")])
    with counted(world) as two_inbox:
        two = call(world, "admin", "list_approvals")
    with counted(world) as two_page:
        releases = call(world, "admin", "list_releases")
    assert len(one.items) == 1 and len(two.items) == 2
    assert all(t.deciders for t in two.items)
    assert sum(r.approval is not None and bool(r.approval.deciders) for r in releases.items) == 2
    assert len(two_inbox) == len(one_inbox), two_inbox
    assert len(two_page) == len(one_page), two_page

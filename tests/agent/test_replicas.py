"""Two API replicas on one PostgreSQL: live events and cards cross between them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from agent.hub import Outbox
from agent.models import ChatCard
from api.wiring import Services
from core.config import Settings
from core.events import LiveEvent, queue_event
from tests.conftest import World, build_world
from tests.support.calls import call, deploy
from tests.support.events import live_event


@pytest.fixture
def replicas(pg_services: Services) -> Iterator[tuple[World, Services]]:
    """Replica A (the test world's services) and replica B (its own engine, bus and hub)."""
    world = build_world(pg_services)
    other = Services.build(Settings(database_url=str(pg_services.engine.url)), inline_apply=True)
    _ = pg_services.hub, other.hub  # both listen
    yield world, other
    other.close()


def _wait(frames: list[dict[str, Any]], predicate: Any, hubs: list[Services]) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for services in hubs:
            services.hub.drain(timeout=1)
        for frame in frames:
            if predicate(frame):
                return frame
        time.sleep(0.05)
    raise AssertionError(f"no matching frame in {[f['type'] for f in frames]}")


@pytest.mark.postgres
def test_a_card_reaches_an_approver_connected_to_another_replica(
    replicas: tuple[World, Services],
) -> None:
    world, replica_b = replicas
    bob_on_b: list[dict[str, Any]] = []
    replica_b.hub.register(Outbox(world.actor("bob").user_id or 0, "s", bob_on_b.append))
    alice_on_a: list[dict[str, Any]] = []
    world.services.hub.register(Outbox(world.actor("alice").user_id or 0, "s", alice_on_a.append))
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    call(world, "alice", "submit_release", release_id=release.id)  # through replica A
    card = _wait(
        bob_on_b,
        lambda f: f["type"] == "card" and f["card"]["kind"] == "approval",
        [world.services, replica_b],
    )
    assert card["card"]["release_id"] == release.id
    # Both replicas handled the event; the card exists once per approver.
    with world.services.sessions() as session:
        per_user = session.execute(
            select(ChatCard.user_id, func.count())
            .where(ChatCard.kind == "approval")
            .group_by(ChatCard.user_id)
        ).all()
    assert per_user and all(count == 1 for _, count in per_user)
    # bob decides through replica B; alice, on replica A, sees it.
    ctx = replica_b.context(world.actor("bob"))
    from tools.registry import get_tool

    get_tool("approve_release").run(ctx, {"release_id": release.id})
    update = _wait(
        alice_on_a,
        lambda f: f["type"] == "release_update" and f["lifecycle_state"] == "approved",
        [world.services, replica_b],
    )
    assert update["release_id"] == release.id


@pytest.mark.postgres
def test_a_transaction_of_many_events_reaches_the_other_replica_whole_and_in_order(
    replicas: tuple[World, Services],
) -> None:
    world, replica_b = replicas
    _ = replica_b.hub  # B listens
    heard: list[LiveEvent] = []
    done = threading.Event()

    def hear(live_event: LiveEvent) -> None:
        if live_event.kind == "bulk":
            heard.append(live_event)
            if len(heard) == 2500:
                done.set()

    unsubscribe = replica_b.bus.subscribe(hear)
    try:
        with world.services.sessions() as session:  # one INSERT, and several NOTIFYs
            for n in range(2500):
                queue_event(session, live_event("bulk", {"n": n, "line": "🚀" * 20}))
            session.commit()
        assert done.wait(20), len(heard)
    finally:
        unsubscribe()
    assert [e.data["n"] for e in heard] == list(range(2500))


@pytest.mark.postgres
def test_an_event_with_a_lone_surrogate_and_a_long_line_reaches_the_other_replica_as_written(
    replicas: tuple[World, Services],
) -> None:
    """What a client can put in an event (a reject comment, a log line) crosses intact: a
    lone surrogate the JSON door decoded, emoji, 10,000 characters (NOTIFY carries only ids)."""
    world, replica_b = replicas
    _ = replica_b.hub
    heard: list[LiveEvent] = []
    done = threading.Event()

    def hear(live_event: LiveEvent) -> None:
        if live_event.kind == "odd":
            heard.append(live_event)
            done.set()

    data = {"reason": "bad \ud800 tag 🚀", "line": "x" * 10_000 + "🚀"}
    unsubscribe = replica_b.bus.subscribe(hear)
    try:
        with world.services.sessions() as session:
            queue_event(session, live_event("odd", data, state="failed"))
            session.commit()
        assert done.wait(10)
    finally:
        unsubscribe()
    assert heard[0].data == data

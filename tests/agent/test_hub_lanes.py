"""A sweep that expires many releases at once does not hold a card fan-out behind it."""

from __future__ import annotations

import threading
from typing import Any

from agent.hub import AHEAD, Lanes, Outbox
from core.events import LiveEvent
from tests.conftest import World
from tests.support.calls import call, deploy
from tests.support.events import live_event, published


def _expiry(release_id: str) -> LiveEvent:
    return _news(release_id, "expire")


def _news(release_id: str, action: str) -> LiveEvent:
    """A release's update after `action` (an expiry is the sweeper's)."""
    data = {"action": action, "actor": "system"}
    return live_event(
        "release_update", data, release_id=release_id, environment="dev", state="expired"
    )


def _ask(release_id: str) -> LiveEvent:
    """A release's request for approval."""
    return live_event("approval_requested", release_id=release_id, environment="dev")


def test_the_sweepers_expiries_wait_behind_a_card_fan_out(world: World) -> None:
    hub = world.services.hub
    waiting = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.0"})
    hub.drain()
    heard: list[tuple[str, dict[str, Any]]] = []
    gate = threading.Event()
    blocked = threading.Event()

    def alice_reads_slowly(frame: dict[str, Any]) -> None:
        blocked.set()
        assert gate.wait(10)
        heard.append(("alice", frame))

    hub.register(Outbox(world.actor("alice").user_id or 0, "s", alice_reads_slowly))
    frank = world.actor("frank").user_id or 0
    hub.register(Outbox(frank, "s", lambda f: heard.append(("frank", f))))
    try:
        first = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
        call(world, "alice", "submit_release", release_id=first.id)
        assert blocked.wait(10)  # the hub is busy telling alice about R-1
        for _ in range(200):  # a sweep's expiries (of one release here: each one costs the same)
            world.services.bus.publish(_expiry(waiting.id))
        second = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "2.0.0"})
        call(world, "alice", "submit_release", release_id=second.id)
    finally:
        gate.set()
    hub.drain()
    order = [
        (who, f["type"], f.get("action"), (f.get("card") or {}).get("release_id"))
        for who, f in heard
    ]
    frank_card = order.index(("frank", "card", None, second.id))
    expiries = [i for i, (_, _, action, _) in enumerate(order) if action == "expire"]
    assert len(expiries) >= 200, order[:20]
    assert frank_card < min(expiries), order[: frank_card + 1]


def test_lanes_keep_a_releases_order_and_markers_come_last() -> None:
    lanes = Lanes()
    marker = threading.Event()
    a1, b1 = _expiry("R-1"), _expiry("R-2")
    a2 = _news("R-1", "approve")
    c = _news("R-3", "submit")
    for item in (a1, b1, marker, a2, c):
        lanes.put(item)
    taken = [lanes.take() for _ in range(4)]
    assert taken == [[a1, a2], [c], [b1], [marker]]


def test_an_expiry_queued_after_a_releases_event_is_handled_after_it() -> None:
    lanes = Lanes()
    asked = _ask("R-1")
    expired = _expiry("R-1")
    for item in (asked, expired, threading.Event()):
        lanes.put(item)
    assert [lanes.take(), lanes.take()] == [[asked], [expired]]


def test_a_releases_events_queued_together_are_taken_in_one_pass() -> None:
    # A submit's update and its approval request: one transaction on the hub, not two.
    lanes = Lanes()
    submitted = _news("R-1", "submit")
    asked = _ask("R-1")
    other = _news("R-2", "approve")
    again = _news("R-1", "cancel")
    for item in (submitted, asked, other, again):
        lanes.put(item)
    assert [lanes.take(), lanes.take(), lanes.take()] == [[submitted, asked], [other], [again]]


def test_an_expiry_between_two_events_of_a_release_keeps_them_apart() -> None:
    lanes = Lanes()
    submitted = _news("R-1", "submit")
    expired = _expiry("R-1")
    asked = _ask("R-1")
    for item in (submitted, expired, asked):
        lanes.put(item)
    assert [lanes.take(), lanes.take()] == [[submitted], [expired, asked]]


def test_a_release_asking_for_decisions_goes_before_other_releases_news() -> None:
    # A superseding submit: the older release's cancel is queued first, in the same burst.
    lanes = Lanes()
    cancelled = _news("R-1", "cancel")
    submitted = _news("R-2", "submit")
    asked = _ask("R-2")
    marker = threading.Event()
    for item in (cancelled, submitted, asked, marker):
        lanes.put(item)
    assert [lanes.take(), lanes.take(), lanes.take()] == [[submitted, asked], [cancelled], [marker]]


def test_an_asking_release_keeps_its_own_order_and_expiries() -> None:
    lanes = Lanes()
    previewed = _news("R-2", "preview")
    other = _news("R-1", "cancel")
    expired = _expiry("R-2")
    asked = _ask("R-2")
    for item in (previewed, other, expired, asked):
        lanes.put(item)
    # R-2's first event still goes first, and its expiry stays between its two events.
    taken = [lanes.take(), lanes.take(), lanes.take()]
    assert taken == [[previewed], [expired, asked], [other]]


def test_a_stream_of_approval_requests_holds_other_news_back_a_bounded_while() -> None:
    lanes = Lanes()
    news = _news("R-1", "cancel")
    lanes.put(news)
    for n in range(2, AHEAD + 5):
        asked = _ask(f"R-{n}")
        lanes.put(asked)
    taken = [lanes.take() for _ in range(AHEAD + 1)]
    assert taken[-1] == [news]
    assert news not in [event for batch in taken[:-1] for event in batch]
    while len(taken) < AHEAD + 4:  # the rest of the stream
        taken.append(lanes.take())
    # The bound counts passes in a row: once the news has gone, a request jumps again.
    later_news = _news("R-90", "cancel")
    asked = _ask("R-91")
    lanes.put(later_news)
    lanes.put(asked)
    assert [lanes.take(), lanes.take()] == [[asked], [later_news]]


def test_approvers_get_the_new_card_before_the_superseded_releases_news(world: World) -> None:
    hub = world.services.hub
    older = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "2.0.0"})
    call(world, "alice", "submit_release", release_id=older.id)
    published(world.services)
    hub.drain()
    heard: list[dict[str, Any]] = []
    gate, blocked = threading.Event(), threading.Event()

    def alice_reads_slowly(frame: dict[str, Any]) -> None:
        blocked.set()
        assert gate.wait(10)

    hub.register(Outbox(world.actor("alice").user_id or 0, "s", alice_reads_slowly))
    hub.register(Outbox(world.actor("frank").user_id or 0, "s", heard.append))
    try:
        newer = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "2.1.0"})
        assert blocked.wait(10)  # the hub is busy telling alice about the new preview
        # The submit's burst: the older release cancelled, the newer one asking for approval.
        call(world, "alice", "submit_release", release_id=newer.id)
        published(world.services)
    finally:
        gate.set()
    hub.drain()
    order = [
        (f["type"], f.get("release_id") or f["card"]["release_id"], f.get("action")) for f in heard
    ]
    new_card = order.index(("card", newer.id, None))
    old_news = order.index(("release_update", older.id, "cancel"))
    assert new_card < old_news, order


def test_lanes_fed_from_many_threads_lose_nothing_and_keep_each_releases_order() -> None:
    lanes = Lanes()
    releases = [f"R-{n}" for n in range(1, 7)]
    sent = {
        rid: [_ask(rid) if i % 7 == 3 else _news(rid, f"step-{i}") for i in range(300)]
        for rid in releases
    }
    got: dict[str, list[LiveEvent]] = {rid: [] for rid in releases}
    mixed: list[list[Any]] = []
    start = threading.Barrier(len(releases) + 1)

    def feed(rid: str) -> None:
        start.wait()
        for event in sent[rid]:
            lanes.put(event)

    def handle() -> None:  # the hub's side, taking while the feeders put
        start.wait()
        while True:
            batch = lanes.take()
            if batch and isinstance(batch[0], threading.Event):
                return  # the marker queued after every feeder finished
            if len({e.release_id for e in batch if isinstance(e, LiveEvent)}) != 1:
                mixed.append(batch)
            for event in batch:
                assert isinstance(event, LiveEvent)
                got[event.release_id].append(event)

    feeders = [threading.Thread(target=feed, args=(rid,)) for rid in releases]
    hub = threading.Thread(target=handle)
    for thread in [*feeders, hub]:
        thread.start()
    for thread in feeders:
        thread.join(timeout=10)
    lanes.put(threading.Event())
    hub.join(timeout=10)
    assert not hub.is_alive() and not mixed
    assert got == sent

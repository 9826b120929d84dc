"""Approval cards wait as long as their ticket, not as long as the preview."""

from __future__ import annotations

import threading

from sqlalchemy import delete

from agent.cards import approval_cards, card_view, new_id, open_cards
from agent.models import ChatCard
from core.ids import parse_release_id
from core.releases.queries import load_release
from tests.conftest import World, _settle
from tests.support.calls import call, deploy


def test_an_approval_card_expires_when_its_ticket_times_out(world: World) -> None:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    submitted = call(world, "alice", "submit_release", release_id=release.id)
    with world.services.sessions() as session:
        loaded = load_release(session, release.id)
        approvers = approval_cards(session, loaded)
        cards = open_cards(session, loaded.number, kind="approval")
        session.commit()
        assert cards and {card.user_id for card in cards} == approvers
        deadlines = {card.expires_at for card in cards}
    assert deadlines == {submitted.approval.times_out_at}
    assert submitted.approval.times_out_at > submitted.preview.expires_at


def test_hubs_opening_the_same_cards_at_once_leave_one_open_card_per_approver(
    world: World,
) -> None:
    # Replicas handle the same live event: each writes every approver's card in one INSERT
    # (on PostgreSQL from two arrays) and the open-card index keeps one per approver.
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    _settle(world.services)  # this process's hub opened them first
    number = parse_release_id(release.id)
    with world.services.sessions() as session:
        session.execute(delete(ChatCard).where(ChatCard.release_number == number))
        session.commit()
    start = threading.Barrier(4)
    opened: list[set[int]] = []

    def hub() -> None:
        start.wait()  # before any transaction: SQLite's writers queue for its one lock
        with world.services.sessions() as session:
            loaded = load_release(session, release.id)
            opened.append(approval_cards(session, loaded))
            session.commit()

    threads = [threading.Thread(target=hub) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(opened) == 4 and all(approvers == opened[0] for approvers in opened)
    with world.services.sessions() as session:
        cards = open_cards(session, number, kind="approval")
    owners = [card.user_id for card in cards]
    assert sorted(owners) == sorted(opened[0]) and len(set(owners)) == len(owners)
    assert {card.args["release_id"] for card in cards} == {release.id}


def test_a_fan_out_reads_a_hostile_card_as_the_card_itself_would_show(world: World) -> None:
    # The hub reads the cards it pushes as column rows: a card's view from the row is the
    # view of the stored card, whatever its arguments and outcome hold.
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    number = parse_release_id(release.id)
    alice = world.actor("alice").user_id or 0
    huge = "🚀" * 10_000
    with world.services.sessions() as session:
        session.add(
            ChatCard(
                id=new_id(),
                user_id=alice,
                kind="confirmation",
                tool="apply_release",
                args={"release_id": release.id, "note": huge, "nested": {"x" * 300: [huge]}},
                release_number=number,
                state="open",
                outcome="💥" * 10_000,
            )
        )
        session.commit()
    with world.services.reads() as session:
        (row,) = open_cards(session, number, kind="confirmation", users=[alice, 10**9])
        stored = session.get_one(ChatCard, row.id)
        assert card_view(session, row) == card_view(session, stored)
        assert row.args["note"] == huge and row.outcome == stored.outcome  # clipped as stored
        # another project's release, or another user, reads nothing
        assert open_cards(session, number + 1, kind="confirmation") == []
        assert open_cards(session, number, kind="confirmation", users=[10**9]) == []

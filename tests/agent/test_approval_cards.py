"""Approval cards wait as long as their ticket, not as long as the preview."""

from __future__ import annotations

from agent.cards import approval_cards, open_cards
from core.releases.queries import load_release
from tests.conftest import World
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

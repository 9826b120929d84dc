"""Chat leaks nothing: no card, no live update, no diff of a project the user cannot see.

Through the real WebSocket of a real uvicorn server. `frank` owns `payment` and has no role on
`shop`; `alice` requests on both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from agent.models import ChatCard
from tests.conftest import World
from tests.support.calls import call, deploy
from tests.support.server import ChatClient, running_server

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def server(world: World) -> Iterator[str]:
    with running_server(world.services) as address:
        yield address


def settled(world: World, client: ChatClient) -> list[dict[str, Any]]:
    """Every frame the client got once the hub handled all events so far (ping as a fence)."""
    world.services.hub.drain()
    client.send({"type": "ping"})
    client.expect(lambda f: f["type"] == "pong")
    return client.frames


@pytest.mark.parametrize("text", ["cancel R-1", "apply R-1", "submit R-1", "approve R-1"])
def test_outsider_gets_no_card_for_a_hidden_release(world: World, server: str, text: str) -> None:
    deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    frank = ChatClient(server, world.tokens["frank"])
    frank.say(text)
    error = frank.expect(lambda f: f["type"] == "error")
    # Exactly what a release that does not exist gets.
    assert (error["code"], error["message"]) == ("not_found", "no release R-1")
    assert not [f for f in frank.frames if f["type"] == "card"]
    assert not [f for f in frank.frames if "shop/web" in repr(f)]

    frank.say(text.replace("R-1", "R-99"))
    missing = frank.expect(lambda f: f["type"] == "error")
    assert (missing["code"], missing["message"]) == ("not_found", "no release R-99")
    assert missing.get("details", {}).keys() == error.get("details", {}).keys()

    # Nothing reaches frank when the release moves on.
    call(world, "alice", "submit_release", release_id="R-1")
    call(world, "bob", "approve_release", release_id="R-1")
    frames = settled(world, frank)
    assert not [f for f in frames if f["type"] in ("card", "release_update")], frames
    assert not [f for f in frames if "shop/web" in repr(f)]
    frank.close()


def test_a_card_held_before_the_rule_brings_no_updates(world: World, server: str) -> None:
    """A card row for a hidden release (made before this rule, or a role since removed)."""
    deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    frank_id = world.actor("frank").user_id
    with world.services.sessions() as session:
        session.add(
            ChatCard(
                id=uuid.uuid4().hex[:16],
                user_id=frank_id,
                kind="confirmation",
                tool="cancel_release",
                args={"release_id": "R-1"},
                release_number=1,
            )
        )
        session.commit()
    frank = ChatClient(server, world.tokens["frank"])
    alice = ChatClient(server, world.tokens["alice"])
    call(world, "alice", "submit_release", release_id="R-1")
    alice.expect(lambda f: f["type"] == "release_update" and f["release_id"] == "R-1")
    frames = settled(world, frank)
    assert not [f for f in frames if f["type"] in ("card", "release_update")], frames
    alice.close()
    frank.close()


def test_insider_still_gets_cards_and_updates(world: World, server: str) -> None:
    """The filter keeps what a project's people need (the control for the tests above)."""
    deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    victor = ChatClient(server, world.tokens["victor"])  # viewer on shop
    victor.say("cancel R-1")
    card = victor.card(kind="confirmation", tool="cancel_release")
    assert card["release_id"] == "R-1" and card["diff"]
    call(world, "alice", "submit_release", release_id="R-1")
    update = victor.expect(lambda f: f["type"] == "release_update")
    assert update["lifecycle_state"] == "pending_approval"
    victor.close()

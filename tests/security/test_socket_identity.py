"""An open chat socket follows its token: revoked or expired, the next action is refused and
the socket closes within a second, idle or not; a lowered role applies to the next action.
Tickets open a socket once, briefly, and a token in the URL opens nothing."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import text
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from core.identity.service import add_user
from core.identity.tokens import revoke_token
from core.permissions import SYSTEM, Role
from tests.conftest import World
from tests.support.server import ChatClient, chat_ticket, running_server


@pytest.fixture
def server(world: World) -> Iterator[str]:
    with running_server(world.services) as address:
        yield address


def _post(address: str, path: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://{address}{path}", method="POST", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def _token_id(world: World, user: str) -> int:
    with world.services.engine.connect() as connection:
        found = connection.execute(
            text(
                "SELECT t.id FROM api_tokens t JOIN users u ON u.id = t.user_id "
                "WHERE u.name = :n ORDER BY t.id DESC"
            ),
            {"n": user},
        ).scalar()
    assert found is not None
    return int(found)


def _releases(world: World) -> int:
    with world.services.engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM releases")).scalar_one())


def _closed_within(client: ChatClient, seconds: float) -> tuple[float, list[dict[str, Any]]]:
    """Frames received until the server closes the socket; fails if it stays open longer."""
    started = time.monotonic()
    frames: list[dict[str, Any]] = []
    try:
        while True:
            remaining = seconds - (time.monotonic() - started)
            assert remaining > 0, f"socket still open after {seconds}s; got {frames}"
            frames.append(json.loads(client.connection.recv(timeout=remaining)))
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 1008
    return time.monotonic() - started, frames


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_revoking_over_rest_closes_an_idle_socket_within_a_second(
    world: World, server: str
) -> None:
    alice = ChatClient(server, world.tokens["alice"])
    alice.say("list targets")  # the socket works
    _post(server, f"/api/v1/tokens/{_token_id(world, 'alice')}/revoke", world.tokens["admin"])
    elapsed, frames = _closed_within(alice, 1.0)
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "not_authenticated"
    assert elapsed < 1.0


def test_the_next_action_after_revocation_is_refused(world: World, server: str) -> None:
    alice = ChatClient(server, world.tokens["alice"])
    # Revoked by another process (no poke reaches this server): the action itself re-checks.
    with world.services.sessions() as session:
        revoke_token(session, actor=SYSTEM, token_id=_token_id(world, "alice"))
    alice.send({"type": "user_message", "text": "deploy web 1.5.0 to dev"})
    _, frames = _closed_within(alice, 1.0)
    assert [f["code"] for f in frames if f["type"] == "error"] == ["not_authenticated"]
    assert not any(f["type"] in ("card", "tool_call") for f in frames)
    assert _releases(world) == 0


def test_revocation_elsewhere_closes_an_idle_socket_within_a_second(
    world: World, server: str
) -> None:
    alice = ChatClient(server, world.tokens["alice"])
    with world.services.sessions() as session:  # as `shipdeck tokens revoke` would
        revoke_token(session, actor=SYSTEM, token_id=_token_id(world, "alice"))
    elapsed, _ = _closed_within(alice, 1.0)
    assert elapsed < 1.0


def test_a_lowered_role_applies_to_the_next_action(world: World, server: str) -> None:
    alice = ChatClient(server, world.tokens["alice"])
    reply = alice.say("deploy web 1.5.0 to dev")
    assert "R-1" in reply["text"]
    card = alice.card(kind="confirmation", tool="submit_release")
    # Demoted to viewer (as `shipdeck users add alice --role viewer --project shop` does).
    with world.services.sessions() as session:
        add_user(session, actor=SYSTEM, name="alice", role=Role.viewer, project="shop")
    alice.act(card["id"], "confirm")
    refused = alice.expect(lambda f: f["type"] == "error")
    assert refused["code"] == "permission_denied"
    alice.say("deploy api 2.1.0 to dev")
    assert _releases(world) == 1  # nothing new was created
    assert alice.expect(lambda f: f["type"] == "error")["code"] == "permission_denied"


def test_a_ticket_opens_one_socket_once(world: World, server: str) -> None:
    ticket = chat_ticket(server, world.tokens["alice"])
    with connect(f"ws://{server}/api/v1/chat?ticket={ticket}") as ws:
        assert json.loads(ws.recv(timeout=5))["user"] == "alice"
    with pytest.raises((InvalidStatus, ConnectionClosed)):  # used: refused
        with connect(f"ws://{server}/api/v1/chat?ticket={ticket}") as ws:
            ws.recv(timeout=5)
    for bad in ("nope", quote("🚀" * 10), "x" * 5_000):
        with pytest.raises((InvalidStatus, ConnectionClosed)):
            with connect(f"ws://{server}/api/v1/chat?ticket={bad}") as ws:
                ws.recv(timeout=5)


def test_an_expired_ticket_or_a_revoked_tokens_ticket_opens_nothing(
    world: World, server: str
) -> None:
    stale = chat_ticket(server, world.tokens["alice"])
    with world.services.engine.begin() as connection:
        connection.execute(text("UPDATE auth_tickets SET expires_at = created_at"))
    fresh = chat_ticket(server, world.tokens["bob"])
    with world.services.sessions() as session:
        revoke_token(session, actor=SYSTEM, token_id=_token_id(world, "bob"))
    for ticket in (stale, fresh):
        with pytest.raises((InvalidStatus, ConnectionClosed)):
            with connect(f"ws://{server}/api/v1/chat?ticket={ticket}") as ws:
                ws.recv(timeout=5)


def test_a_token_in_the_url_opens_nothing(world: World, server: str) -> None:
    token = world.tokens["alice"]
    with pytest.raises((InvalidStatus, ConnectionClosed)):
        with connect(f"ws://{server}/api/v1/chat?token={token}") as ws:
            ws.recv(timeout=5)
    # Not even next to a valid header.
    with pytest.raises((InvalidStatus, ConnectionClosed)):
        with connect(
            f"ws://{server}/api/v1/chat?token={token}",
            additional_headers={"Authorization": f"Bearer {token}"},
        ) as ws:
            ws.recv(timeout=5)


def test_tickets_need_a_valid_token(world: World, server: str) -> None:
    for token in ("sd_nope", ""):
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(server, "/api/v1/chat/tickets", token)
        assert refused.value.code in (401, 403)

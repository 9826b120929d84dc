"""Approval cards cost a fixed number of SQL statements however many approvers they go to.

Pushing a new ticket's cards to every approver, closing them all after the decision, and
opening a chat session that holds many open cards each run the same statements for 3 cards
as for 12 or 40 (they used to run two to three per card, on the hub's single thread).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from websockets.sync.client import connect

from agent.hub import Outbox
from agent.rules.planner import RulesPlanner
from agent.session import ChatDeps, ChatSession
from api.serving import server_config
from core.config import Settings
from core.events import LiveEvent
from core.identity.models import User
from core.identity.service import actor_for, ensure_user, issue_token
from core.permissions import SYSTEM
from core.targets.service import load_declaration, parse_declaration
from tests.conftest import World, _settle
from tests.core.test_query_counts import counted
from tests.support import engine_events
from tests.support.calls import call, deploy
from tests.support.server import running_server


@contextmanager
def on_hub(world: World) -> Iterator[list[str]]:
    """Every statement the hub's thread sends while the block runs."""
    statements: list[str] = []
    _ = world.services.hub
    # On PostgreSQL events reach the hub through the listener: wait for it, not only the hub.
    _settle(world.services)

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.current_thread().name == "shipdeck-hub":
            statements.append(statement)

    engine_events.listen(world.services.engine, "before_cursor_execute", record)
    try:
        yield statements
        _settle(world.services)
    finally:
        engine_events.remove(world.services.engine, "before_cursor_execute", record)


def _project(world: World, name: str, approvers: int, targets: int = 1) -> list[str]:
    """A project whose high-tier targets (prod, h1, h2...) need one of `approvers` approvers."""
    names = [f"{name}-approver-{i}" for i in range(approvers)]
    extra = "".join(
        f"      - {{environment: h{i}, runtime: sandbox, risk_tier: high}}\n"
        for i in range(1, targets)
    )
    declaration = f"""
projects:
  - name: {name}
    services: [web]
    requesters: [alice]
    approvers: [{", ".join(f'"{n}"' for n in names)}]
    targets:
      - {{environment: prod, runtime: sandbox}}
{extra}"""
    with world.services.sessions() as session:
        load_declaration(session, actor=SYSTEM, declaration=parse_declaration(declaration))
        for n in names:
            issue_token(session, ensure_user(session, n))
        session.commit()
        world.actors.update({u.name: actor_for(u) for u in session.query(User)})
    return names


def _listen(world: World, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    frames: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for n in names:
        world.services.hub.register(Outbox(world.actor(n).user_id or 0, "s", frames[n].append))
    return frames


def _fan_out(world: World, project: str, names: list[str]) -> tuple[list[str], list[str]]:
    """Statements on the hub for one ticket's cards, then for closing them on approval."""
    frames = _listen(world, names)
    release = deploy(world, "alice", project, "prod", web={"image_tag": "9.9.9"})
    with on_hub(world) as opened:
        call(world, "alice", "submit_release", release_id=release.id)
    cards = [f for fs in frames.values() for f in fs if f["type"] == "card"]
    assert len(cards) == len(names), cards
    assert {c["card"]["state"] for c in cards} == {"open"}
    assert {c["card"]["requested_by"] for c in cards} == {"alice"}
    for fs in frames.values():
        fs.clear()
    with on_hub(world) as closed:
        call(world, names[0], "approve_release", release_id=release.id)
    voided = [f["card"] for fs in frames.values() for f in fs if f["type"] == "card"]
    assert len(voided) == len(names), voided
    assert {c["state"] for c in voided} == {"void"}
    assert {c["outcome"] for c in voided} == {f"{release.id} is now approved"}
    assert all(c["actions"] == [] for c in voided)
    return opened, closed


def test_card_fan_out_and_close_cost_the_same_statements_for_3_or_40_approvers(
    world: World,
) -> None:
    few = _fan_out(world, "few", _project(world, "few", 3))
    many = _fan_out(world, "many", _project(world, "many", 40))
    assert [len(s) for s in many] == [len(s) for s in few], (few, many)
    if world.services.engine.dialect.name == "postgresql":
        # The same texts too: the approvers' ids and the cards' ids go in array parameters, not
        # one placeholder each. psycopg parses a text of over 50 parameters again at every
        # execution and never prepares it: at 100 approvers that was a fifth of a fan-out's CPU.
        assert many == few, (few, many)


# One hub pass for a submit (its `release_update` and `approval_requested` events, handled
# together) and one for the decision that closes the cards: these statements and no more,
# however many approvers, cards and open sessions. First the card writes, in one transaction
# (SQLite's first takes the write lock, `BEGIN IMMEDIATE`, core/sqlite_gate.py; PostgreSQL's
# BEGIN goes with the first statement), then, once anyone concerned has a session open on this
# process, what telling them needs, read in a second one (no write lock).
SUBMIT_WRITES = [
    "SELECT releases",  # the release: its state decides which cards still live
    "SELECT chat_cards",  # its cards: who held one before (they hear of the update), the open
    # ones the new state may close
    "SELECT approval_tickets",  # the ticket the approval cards are for
    "SELECT users",  # its eligible approvers: who may decide and has not yet
    "INSERT chat_cards",  # every approver's card, one statement (ON CONFLICT DO NOTHING)
]
SUBMIT_TELLS = [
    "SELECT grants",  # who of those concerned may still see the project
    "SELECT chat_cards",  # their open approval cards as they now stand, to push
    "SELECT releases",  # the cards' release part (project, target, diff, risk), read once
    "SELECT freezes",  # ... and the freezes on its target now
]
DECISION_WRITES = [
    "SELECT releases",  # the release, now approved
    "SELECT chat_cards",  # its cards, the open ones all pointless now
    "UPDATE chat_cards",  # every card voided, one statement
]
DECISION_TELLS = [
    "SELECT grants",  # who of the holders and the requester may still see it
    "SELECT releases",  # the voided cards' release part, read once
    "SELECT freezes",
]


def _shape(statement: str) -> str:
    """`VERB table` of a statement: the table a SELECT reads first or a write writes."""
    words = statement.split()
    verb = words[0].upper()
    if verb == "SELECT":
        return f"SELECT {words[[w.upper() for w in words].index('FROM') + 1]}"
    if verb == "INSERT":
        return f"INSERT {words[2]}"
    if verb == "UPDATE":
        return f"UPDATE {words[1]}"
    return " ".join(words[:2])


def test_a_hub_pass_runs_a_pinned_number_of_statements(world: World) -> None:
    names = _project(world, "pinned", 3)
    _ = world.services.hub  # listening before the preview (on PostgreSQL, alone in a run)
    release = deploy(world, "alice", "pinned", "prod", web={"image_tag": "9.9.9"})
    _settle(world.services)  # the preview's own update is not part of this
    sessions: dict[str, list[list[dict[str, Any]]]] = {n: [[], []] for n in [*names, "alice"]}
    for name, outboxes in sessions.items():  # two open sessions each
        for i, frames in enumerate(outboxes):
            user_id = world.actor(name).user_id or 0
            world.services.hub.register(Outbox(user_id, f"s{i}", frames.append))
    with on_hub(world) as opened:
        call(world, "alice", "submit_release", release_id=release.id)
    with on_hub(world) as closed:
        call(world, names[0], "approve_release", release_id=release.id)
    sqlite = world.services.engine.dialect.name == "sqlite"
    begin = ["BEGIN IMMEDIATE"] if sqlite else []  # the reads begin no transaction
    # 9 statements for the fan-out (10 on SQLite), 6 for closing the cards (7): a query per
    # card or per session would add 3 or 8 here.
    assert [_shape(s) for s in opened] == begin + SUBMIT_WRITES + SUBMIT_TELLS, opened
    assert len(opened) == len(begin) + 9
    assert [_shape(s) for s in closed] == begin + DECISION_WRITES + DECISION_TELLS, closed
    assert len(closed) == len(begin) + 6
    # ... and it did the whole work: two sessions of each approver got an open card, then its
    # voided copy; the requester's sessions heard of both moves.
    for name in names:
        for frames in sessions[name]:
            states = [f["card"]["state"] for f in frames if f["type"] == "card"]
            assert states == ["open", "void"], (name, frames)
    for frames in sessions["alice"]:
        moves = [f["lifecycle_state"] for f in frames if f["type"] == "release_update"]
        assert list(dict.fromkeys(moves)) == ["pending_approval", "approved"], frames


def test_a_card_held_by_someone_who_lost_the_project_is_not_pushed(world: World) -> None:
    names = _project(world, "lost", 3)
    frames = _listen(world, names)
    frames["victor"] = []
    victor = world.actor("victor").user_id or 0
    world.services.hub.register(Outbox(victor, "s", frames["victor"].append))
    release = deploy(world, "alice", "lost", "prod", web={"image_tag": "2.0.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    _settle(world.services)
    assert all(any(f["type"] == "card" for f in frames[n]) for n in names)
    assert frames["victor"] == []  # a viewer of shop only: no role on `lost`


def test_opening_a_session_costs_the_same_statements_for_2_or_12_open_cards(
    world: World,
) -> None:
    deps = ChatDeps(world.services.sessions, world.services.context, RulesPlanner())
    _ = world.services.hub  # listening before the submits (on PostgreSQL, alone in a run)
    approver = _project(world, "open", 1, targets=12)[0]
    environments = ["prod", *(f"h{i}" for i in range(1, 12))]
    counts = []
    for first, last in ((0, 2), (2, 12)):  # one pending release per target (no supersede)
        for environment in environments[first:last]:
            release = deploy(world, "alice", "open", environment, web={"image_tag": "2.0.0"})
            call(world, "alice", "submit_release", release_id=release.id)
        _settle(world.services)  # the listener has published them, the hub handled them
        frames: list[dict[str, Any]] = []
        with counted(world) as statements:
            ChatSession.open(deps, world.actor(approver), frames.append)
        cards = [f["card"] for f in frames if f["type"] == "card"]
        assert {c["kind"] for c in cards} == {"approval"}
        assert {c["release_id"] for c in cards} == {f"R-{n}" for n in range(1, last + 1)}
        counts.append((len(statements), len(cards)))
    assert [c for _, c in counts] == [2, 12]
    assert counts[0][0] == counts[1][0], counts


def test_chat_frames_are_not_compressed_unless_configured(world: World) -> None:
    # Compressing every small frame for every session was 27-29% of the writer's time.
    with running_server(world.services) as address:
        headers = {"Authorization": f"Bearer {world.tokens['alice']}"}
        with connect(f"ws://{address}/api/v1/chat", additional_headers=headers) as ws:
            assert json.loads(ws.recv())["type"] == "session"
            assert ws.response is not None
            assert "Sec-WebSocket-Extensions" not in ws.response.headers
    assert server_config(FastAPI(), Settings()).ws_per_message_deflate is False
    on = Settings(chat_compress_frames=True)
    assert server_config(FastAPI(), on).ws_per_message_deflate is True


def test_with_nobody_concerned_connected_a_hub_pass_only_writes_the_cards(world: World) -> None:
    names = _project(world, "alone", 3)
    # connected, but to nothing this release concerns: a viewer of another project
    bystander: list[dict[str, Any]] = []
    world.services.hub.register(Outbox(world.actor("victor").user_id or 0, "s", bystander.append))
    release = deploy(world, "alice", "alone", "prod", web={"image_tag": "9.9.9"})
    _settle(world.services)
    with on_hub(world) as opened:
        call(world, "alice", "submit_release", release_id=release.id)
    begin = ["BEGIN IMMEDIATE"] if world.services.engine.dialect.name == "sqlite" else []
    assert [_shape(s) for s in opened] == begin + SUBMIT_WRITES, opened
    # the cards are there all the same: an approver who opens a session now gets theirs
    deps = ChatDeps(world.services.sessions, world.services.context, RulesPlanner())
    frames: list[dict[str, Any]] = []
    chat = ChatSession.open(deps, world.actor(names[1]), frames.append)
    cards = [f["card"] for f in frames if f["type"] == "card"]
    assert [(c["release_id"], c["state"], c["kind"]) for c in cards] == [
        (release.id, "open", "approval")
    ], frames
    with on_hub(world) as closed:
        call(world, names[0], "approve_release", release_id=release.id)
    assert [_shape(s) for s in closed] == begin + DECISION_WRITES, closed
    frames.clear()
    ChatSession.open(deps, world.actor(names[1]), frames.append, chat.session_id)
    assert [f for f in frames if f["type"] == "card"] == []  # voided, not listed again
    assert bystander == []


def test_progress_with_nobody_connected_reads_nothing(world: World) -> None:
    release = deploy(world, "alice", "shop", "staging", web={"image_tag": "9.9.9"})
    progress = LiveEvent(
        kind="progress",
        release_id=release.id,
        project="shop",
        environment="staging",
        lifecycle_state="applying",
        at=datetime.now(UTC),
        data={"message": "pulling web", "service": "web", "level": "info"},
    )
    _settle(world.services)
    with on_hub(world) as statements:
        world.services.bus.publish(progress)
    assert statements == []
    frames: list[dict[str, Any]] = []
    world.services.hub.register(Outbox(world.actor("alice").user_id or 0, "s", frames.append))
    with on_hub(world) as statements:
        world.services.bus.publish(progress)
    assert [f["message"] for f in frames if f["type"] == "release_update"] == ["pulling web"]


def test_a_pass_with_no_card_to_write_and_nobody_connected_reads_one_row(world: World) -> None:
    names = _project(world, "quiet", 2)
    _ = world.services.hub
    _settle(world.services)
    with on_hub(world) as previewed:
        older = deploy(world, "alice", "quiet", "prod", web={"image_tag": "7.0.0"})
    # a preview opens no card and its release holds none: one indexed read, no transaction
    # (it read the release and its cards in a transaction, half the hub's statements at load)
    assert [_shape(s) for s in previewed] == ["SELECT chat_cards"], previewed
    call(world, "alice", "submit_release", release_id=older.id)
    newer = deploy(world, "alice", "quiet", "prod", web={"image_tag": "7.0.1"})
    with on_hub(world) as superseded:
        call(world, "alice", "submit_release", release_id=newer.id)
    # the older release's cancel had open cards to close: that pass ran whole
    assert any(s.startswith("UPDATE chat_cards") for s in superseded), superseded
    deps = ChatDeps(world.services.sessions, world.services.context, RulesPlanner())
    frames: list[dict[str, Any]] = []
    ChatSession.open(deps, world.actor(names[0]), frames.append)
    cards = [(f["card"]["release_id"], f["card"]["state"]) for f in frames if f["type"] == "card"]
    assert cards == [(newer.id, "open")], frames

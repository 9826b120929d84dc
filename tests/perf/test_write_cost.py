"""What a submit and a chat turn cost the database: a fixed, small number of statements.

Most of a card fan-out's time was the submit itself (23 statements before its response, 29 on
PostgreSQL, in two transactions), and a chat turn opened five transactions for 14 statements.
Both are pinned here so they cannot grow back silently (like tests/api/test_request_cost.py does
for reads).
"""

from __future__ import annotations

from typing import Any

from agent.rules.planner import RulesPlanner
from agent.session import ChatDeps, ChatSession
from core.approvals.tickets import current_ticket
from core.audit.service import verify
from core.ids import parse_release_id
from tests.conftest import World
from tests.core.test_query_counts import counted
from tests.support.calls import call, deploy


def _kinds(statements: list[str]) -> list[str]:
    return [s.split()[0] for s in statements]


def _head(statement: str) -> str:
    """`SELECT releases`, `UPDATE audit_head`: the verb and the first table it names."""
    words = statement.replace("(", " ").replace(",", " ").split()
    verb = words[0]
    if verb == "SELECT" and "pg_notify" in statement:
        return "SELECT pg_notify"
    if verb == "SELECT":
        table = words[words.index("FROM") + 1]
    elif verb == "INSERT":
        table = words[2]
    else:
        table = words[1]
    return f"{verb} {table}"


def test_a_chat_turn_costs_a_fixed_number_of_statements(world: World) -> None:
    frames: list[dict[str, Any]] = []
    deps = ChatDeps(
        world.services.sessions,
        world.services.context,
        RulesPlanner(),
        reads=world.services.reads,
    )
    chat = ChatSession.open(deps, world.actor("alice"), frames.append)
    question = {"type": "user_message", "text": "what's running in shop prod"}
    chat.handle(question)
    frames.clear()
    with counted(world) as statements:
        chat.handle(question)
    assert [f["type"] for f in frames] == [
        "tool_call",
        "tool_result",
        "assistant_delta",
        "assistant_message",
    ], frames
    assert frames[1]["result"]["project"] == "shop"
    # One read-only transaction for the catalog (2) and the history (1); the read tool's own
    # (visibility 1, target with its project 1, services 1, active release 1); the simulated
    # runtime's read (1, its own transaction); the turn's history in one INSERT. Before: 14
    # statements in five transactions (on SQLite the catalog and the history each took the
    # write lock), a target read its project three times, and the history took one INSERT per
    # frame.
    assert [s for s in _kinds(statements) if s != "BEGIN"] == [
        *["SELECT"] * 3,
        *["SELECT"] * 4,
        "SELECT",
        "INSERT",
    ], statements
    if world.services.engine.dialect.name == "sqlite":  # BEGIN is a statement there
        assert _kinds(statements).count("BEGIN") == 4, statements


def test_a_submit_costs_a_fixed_number_of_statements(world: World) -> None:
    older = deploy(world, "alice", "shop", "prod", web={"image_tag": "9.0"})
    call(world, "alice", "submit_release", release_id=older.id)
    call(world, "erin", "approve_release", release_id=older.id)
    newer = deploy(world, "alice", "shop", "prod", web={"image_tag": "9.1"})
    with counted(world) as statements:
        submitted = call(world, "alice", "submit_release", release_id=newer.id)
    assert submitted.lifecycle_state == "pending_approval"
    # the answer is built from what the submit holds, and says what a fresh read says
    assert submitted == call(world, "alice", "get_release", release_id=newer.id)
    assert submitted.approval is not None and submitted.approval.state == "pending"
    assert call(world, "alice", "get_release", release_id=older.id).lifecycle_state == "cancelled"
    with world.services.sessions() as session:
        ticket = current_ticket(session, parse_release_id(older.id))
        assert ticket is not None and ticket.state == "cancelled"
        assert verify(session).ok  # the chain holds every event of the submit
    # Checks and reads (visibility, release, preview, freezes, policy), the supersede (find,
    # lock, cancel, close its ticket in one UPDATE), the ticket and the move, who may decide
    # (for the answer, read before the commit); on PostgreSQL the live events in one outbox
    # INSERT and one NOTIFY; then the chain: the head, and the events with the moved head
    # (one statement on PostgreSQL, two on SQLite). Before: 23 (29 on PostgreSQL) in two
    # transactions: the preview read twice, the old ticket loaded with its decisions, the
    # answer read again after the commit, one INSERT and NOTIFY per event.
    expected = [
        "SELECT releases",
        "SELECT releases",
        "SELECT previews",
        "SELECT freezes",
        "SELECT policy_rules",
        "SELECT releases",
        "SELECT releases",
        "UPDATE releases",
        "UPDATE approval_tickets",
        "INSERT approval_tickets",
        "UPDATE releases",
        "SELECT approval_tickets",
    ]
    if world.services.engine.dialect.name == "postgresql":
        expected += ["INSERT live_outbox", "SELECT pg_notify", "SELECT audit_head", "WITH linked"]
    else:
        assert _kinds(statements).count("BEGIN") == 1, statements
        expected += ["SELECT audit_head", "INSERT audit_events", "UPDATE audit_head"]
    assert [_head(s) for s in statements if not s.startswith("BEGIN")] == expected, statements

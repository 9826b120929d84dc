"""What a submit and a chat turn cost the database: a fixed, small number of statements.

Most of a card fan-out's time was the submit itself (25 statements before its response, 19 of
them before its commit), and a chat turn opened five transactions for 19 statements. Both
are pinned here so they cannot grow back silently (like tests/api/test_request_cost.py does
for reads).
"""

from __future__ import annotations

from typing import Any

from agent.rules.planner import RulesPlanner
from agent.session import ChatDeps, ChatSession
from tests.conftest import World
from tests.core.test_query_counts import counted


def _kinds(statements: list[str]) -> list[str]:
    return [" ".join(s.split()[:1]) for s in statements]


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
    # runtime's read (1, its own transaction); the turn's history in one INSERT. Before: 19
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

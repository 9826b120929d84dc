"""What a submit and a chat turn cost the database: a fixed, small number of statements.

Most of a card fan-out's time was the submit itself (23 statements before its response, 29 on
PostgreSQL, in two transactions), and a chat turn opened five transactions for 14 statements
(17 and six with the socket's token re-check).
Both are pinned here so they cannot grow back silently (like tests/api/test_request_cost.py does
for reads).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from agent.rules.planner import RulesPlanner
from agent.session import ChatDeps, ChatSession
from api.deps import resolve_token
from api.routes.chat import handle_frame
from core.approvals.tickets import current_ticket
from core.audit.service import verify
from core.ids import parse_release_id
from core.targets.models import Project
from tests.conftest import World
from tests.core.test_query_counts import counted
from tests.support.calls import call, deploy


def _kinds(statements: list[str]) -> list[str]:
    return [s.split()[0] for s in statements]


def _head(statement: str) -> str:
    """`SELECT releases`, `UPDATE audit_head`: the verb and the first table it names."""
    words = statement.replace("(", " ").replace(")", " ").replace(",", " ").split()
    verb = words[0]
    if verb == "WITH" and "pg_notify" in statement:
        return "INSERT live_outbox + NOTIFY"
    if verb == "SELECT":  # the first table read (inside a subquery, if it reads from one)
        table = next(w for i, w in enumerate(words[1:]) if words[i] == "FROM" and w != "SELECT")
    elif verb == "INSERT":
        table = words[2]
    else:
        table = words[1]
    return f"{verb} {table}"


def _committed(world: World) -> list[str]:
    """A write's commit: on PostgreSQL its live events (the outbox rows and their NOTIFYs in one
    statement; it was an INSERT and a SELECT pg_notify), then the chain's head and the events
    with the moved head in one statement; SQLite has no live outbox and writes the events and
    the head apart."""
    if world.services.engine.dialect.name == "postgresql":
        return ["INSERT live_outbox + NOTIFY", *_chain(world)]
    return _chain(world)


def _chain(world: World) -> list[str]:
    """A commit's audit chain: its head, then the events and the moved head."""
    if world.services.engine.dialect.name == "postgresql":
        return ["SELECT audit_head", "WITH linked"]
    return ["SELECT audit_head", "INSERT audit_events", "UPDATE audit_head"]


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
    assert frames[1]["result"]["services"]["web"]["image"], frames[1]
    # One read-only transaction for the plan's inputs (1: the catalog token, its rows kept
    # while no project, target or service changed, and whether anyone else wrote to the
    # conversation); the read tool's own (visibility 1; the target with
    # its project, services and applying release 1, plain rows); the simulated runtime's read
    # (1, its own read-only transaction); the turn's history in one INSERT. Before: 14
    # statements in five transactions (on SQLite the catalog and the history each took the
    # write lock), a target read its project three times, and the history took one INSERT per
    # frame; then 9, the services read apart and the runtime's read taking the SQLite write
    # lock; then 8, the catalog read whole, the target an ORM entity with its services
    # eagerly loaded (a third of a turn's CPU), the applying release apart, and the planner's
    # window on the conversation read back (tool results included) every turn.
    assert [s for s in _kinds(statements) if s != "BEGIN"] == [
        "SELECT",
        *["SELECT"] * 2,
        "SELECT",
        "INSERT",
    ], statements
    if world.services.engine.dialect.name == "sqlite":  # BEGIN is a statement there
        # the history, the turn's only write; its reads begin no transaction (as on PostgreSQL)
        assert [s for s in statements if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"], statements


def test_a_socket_turn_rechecks_the_token_in_the_turns_first_read(world: World) -> None:
    """The socket's whole turn: the token re-check shares the plan inputs' transaction."""
    frames: list[dict[str, Any]] = []
    credential = resolve_token(world.services, world.tokens["alice"])
    chat = ChatSession.open(world.services.chat, credential.actor, frames.append)
    question = {"type": "user_message", "text": "what's running in shop prod"}
    assert handle_frame(world.services, chat, credential.token_id, question) is None
    frames.clear()
    with counted(world) as statements:
        assert handle_frame(world.services, chat, credential.token_id, question) is None
    assert frames[-1]["type"] == "assistant_message", frames
    # The re-check (token, user and grants in one statement; it was three in a transaction
    # and a thread hop of its own) with the probe (the catalog token, and rows others wrote
    # to the conversation; a statement apart before), then the turn above, less the
    # visibility check: the re-check read the ids of the caller's own projects with its grants.
    said = [s for s in statements if not s.startswith("BEGIN")]
    assert all(table in said[0] for table in ("api_tokens", "catalog_version", "chat_messages")), (
        said
    )
    assert [_head(s) for s in said[1:]] == [
        "SELECT targets",  # with its project, services and applying release
        "SELECT sandbox_services",
        "INSERT chat_messages",
    ], statements
    if world.services.engine.dialect.name == "sqlite":
        assert _kinds(statements).count("BEGIN") == 1, statements


def test_a_preview_costs_a_fixed_number_of_statements(world: World) -> None:
    deploy(world, "alice", "shop", "staging", web={"image_tag": "8.0"})
    with counted(world) as statements:
        previewed = deploy(world, "alice", "shop", "staging", web={"image_tag": "9.0"})
    assert previewed == call(world, "alice", "get_release", release_id=previewed.id)
    # Visibility, the target with its project and services in one statement (an unknown
    # service is core's NotFound), the runtime's live read with no transaction open, then one
    # transaction: the release and its preview, the target's freeze (for the answer), the live
    # event and the chain. Before: 16, the target and its services read twice (a tools-level
    # service check, then core) and the answer read after the commit; until the fifteenth
    # round the services were a statement of their own, and the requester's row was read too
    # (the token check had read their id and name).
    expected = [
        "SELECT projects",
        "SELECT targets",
        "SELECT sandbox_services",
        "INSERT releases",
        "INSERT previews",
        "SELECT freezes",
    ]
    expected += _committed(world)
    assert [_head(s) for s in statements if not s.startswith("BEGIN")] == expected, statements


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
    # Checks and reads (the release, read whole by the visibility check; preview, freezes,
    # policy), the supersede (find, lock, cancel, close its ticket in one UPDATE), the ticket
    # and the move, who may decide (for the answer, read before the commit); on PostgreSQL the
    # live events in one outbox INSERT and one NOTIFY; then the chain: the head, and the events
    # with the moved head (one statement on PostgreSQL, two on SQLite). Before: 23 (29 on
    # PostgreSQL) in two transactions: the preview read twice, the old ticket loaded with its
    # decisions, the answer read again after the commit, one INSERT and NOTIFY per event; and
    # until 2026-11-28 the visibility check and the release load were two statements.
    expected = [
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
    expected += _committed(world)
    if world.services.engine.dialect.name == "sqlite":
        assert _kinds(statements).count("BEGIN") == 1, statements
    assert [_head(s) for s in statements if not s.startswith("BEGIN")] == expected, statements


def test_an_approval_costs_a_fixed_number_of_statements(world: World) -> None:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "9.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    with counted(world) as statements:
        approved = call(world, "erin", "approve_release", release_id=release.id)
    assert approved.lifecycle_state == "approved"
    assert approved == call(world, "erin", "get_release", release_id=release.id)
    # The release, read once and locked (a hidden one answers as a missing one there), the
    # ticket (locked) with its decisions, may this person decide, is the preview fresh; the
    # decision, the ticket and the release moved; the target's freeze (for the answer); on
    # PostgreSQL the live event and its NOTIFY; the chain (the head, then the events with the
    # moved head: one statement on PostgreSQL, two on SQLite). The answer is built from what
    # the transaction holds. Before: 21 statements, the ticket and its decisions read again
    # after the INSERT, and the answer read in a second transaction after the commit (the
    # release, its ticket and decisions, the freezes and the preview); until 2026-11-28 the
    # visibility check and the release load were two statements, and until the fifteenth
    # round the release was read by the visibility check, then again by its lock, the
    # approver's row was read (the token check had read their id and name), and the ticket's
    # decisions were a statement of their own.
    expected = [
        "SELECT releases",
        "SELECT approval_tickets",
        "SELECT grants",
        "SELECT previews",
        "INSERT approval_decisions",
        "UPDATE approval_tickets",
        "UPDATE releases",
        "SELECT freezes",
    ]
    expected += _committed(world)
    assert [_head(s) for s in statements if not s.startswith("BEGIN")] == expected, statements
    if world.services.engine.dialect.name == "sqlite":
        assert _kinds(statements).count("BEGIN") == 1, statements


def _answered_before_commit(world: World, statements: list[str]) -> None:
    """The write's last statements are its audit chain's, at commit: nothing was read after."""
    heads = [_head(s) for s in statements if not s.startswith("BEGIN")]
    chain = _chain(world)
    assert heads[-len(chain) :] == chain, statements
    if world.services.engine.dialect.name == "sqlite":
        assert _kinds(statements).count("BEGIN") == 1, statements


def test_a_first_step_approval_answers_what_a_fresh_read_says(world: World) -> None:
    """A step that leaves the ticket waiting: who may decide next is part of the answer."""
    release = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "9.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    with counted(world) as statements:
        approved = call(world, "frank", "approve_release", release_id=release.id)
    _answered_before_commit(world, statements)
    assert approved.lifecycle_state == "pending_approval"
    assert approved.approval is not None and approved.approval.current_step == 1
    assert approved.approval.steps[0].approved_by == ["frank"]
    assert approved == call(world, "frank", "get_release", release_id=release.id)
    # an approver of the next step reads it as theirs to decide
    assert call(world, "carol", "get_release", release_id=release.id).approval.can_decide


def test_a_rejection_and_a_takeover_answer_what_a_fresh_read_says(world: World) -> None:
    """Both are answered from what their transaction holds, as an approval is."""
    taken = deploy(world, "alice", "shop", "prod", web={"image_tag": "9.0"})
    call(world, "alice", "submit_release", release_id=taken.id)
    with counted(world) as statements:
        answer = call(world, "dave", "takeover_approval", release_id=taken.id)
    _answered_before_commit(world, statements)
    assert answer.approval is not None and answer.approval.assignee == "dave"
    assert answer == call(world, "dave", "get_release", release_id=taken.id)
    with counted(world) as statements:
        answer = call(world, "erin", "reject_release", release_id=taken.id, reason="not today 🚫")
    _answered_before_commit(world, statements)
    assert answer.lifecycle_state == "rejected" and answer.reason == "not today 🚫"
    assert [(d.user, d.decision) for d in answer.approval.decisions] == [("erin", "reject")]
    assert answer == call(world, "erin", "get_release", release_id=taken.id)


def test_a_decision_over_its_columns_bound_answers_what_is_stored(world: World) -> None:
    """Text longer than its column is stored clipped (core.db.Clipped): an answer built from
    the objects the transaction holds says the stored text, not the text it was given."""
    from core.flows.decisions import approve_release, reject_release

    long = "🚀" * 5000 + "x" * 5000  # 10,000 characters, five times a comment's column
    approved = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "9.0"})
    call(world, "alice", "submit_release", release_id=approved.id)
    with world.services.sessions() as session:
        answer = approve_release(
            session, actor=world.actor("frank"), runner=None, release=approved.id, comment=long
        )
    assert answer.approval is not None and len(answer.approval.decisions[0].comment or "") <= 2000
    assert answer == call(world, "frank", "get_release", release_id=approved.id)
    with world.services.sessions() as session:
        answer = reject_release(
            session, actor=world.actor("carol"), release=approved.id, reason=long
        )
    assert answer.reason is not None and len(answer.reason) <= 2000
    assert answer == call(world, "carol", "get_release", release_id=approved.id)


def test_a_submit_under_a_long_policy_answers_the_stored_policy_reason(world: World) -> None:
    """A policy of many steps with long group names describes itself past its column."""
    from core.targets.models import PolicyRule

    steps = [{"group": f"{'g' * 60}{i}", "count": 1} for i in range(9)]
    with world.services.sessions() as session:
        shop = session.scalars(select(Project).where(Project.name == "shop")).one()
        session.add(PolicyRule(project_id=shop.id, environment="prod", position=0, steps=steps))
        session.commit()
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "9.0"})
    submitted = call(world, "alice", "submit_release", release_id=release.id)
    assert submitted.approval is not None and len(submitted.approval.policy_reason) <= 500
    assert submitted == call(world, "alice", "get_release", release_id=release.id)


def test_an_apply_job_reaches_the_runtime_without_claiming_or_planning_again(
    world: World,
) -> None:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "9.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "erin", "approve_release", release_id=release.id)
    with counted(world) as statements:  # the test world applies inline: the job runs here
        call(world, "alice", "apply_release", release_id=release.id)
    applied = call(world, "alice", "get_release", release_id=release.id)
    assert applied.lifecycle_state == "applied"
    moved = next(
        i
        for i, s in enumerate(statements)
        if s.startswith("UPDATE releases") and "lifecycle_state" in s.split("WHERE")[0]
    )
    first_line = next(
        i for i, s in enumerate(statements) if s.startswith("INSERT INTO progress_events")
    )
    between = [" ".join(s.split()[:6]) for s in statements[moved + 1 : first_line]]
    # The apply call committed this worker's claim with the move to `applying` and hands the
    # job its plan: before, the job claimed again (an UPDATE of the release) and read the
    # release, its preview and its target back before the runtime's first progress line.
    assert not any("FROM previews" in s for s in statements[moved:first_line]), between
    claims = [s for s in statements[moved + 1 : first_line] if s.startswith("UPDATE releases")]
    assert len(claims) == 1, between  # the first progress line renews the claim: the fence

"""Approval tickets: opening, closing, eligibility and the card/inbox view."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Update,
    and_,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, joinedload, lazyload

from core.approvals.models import ApprovalDecision, ApprovalTicket
from core.approvals.rows import TicketRow
from core.config import get_settings
from core.db import among, among_values, plain_rows
from core.errors import IllegalTransition
from core.identity.models import Grant, Group, GroupMember, User
from core.ids import release_id
from core.permissions import Actor, Role
from core.policy import PolicyDecision
from core.releases.models import Preview, Release
from core.releases.rows import PreviewRow, ReleaseRow, TargetRow
from core.targets.models import Target

APPROVER_ROLES = (Role.approver.value, Role.admin.value)
OPEN = "pending"
# Views read the same fields from ORM entities and from plain rows (core.*.rows).
AnyTicket = ApprovalTicket | TicketRow
AnyRelease = Release | ReleaseRow


def approval_timeout_seconds(target: Target | TargetRow) -> int:
    """How long an approval ticket on a target waits (its own, or the configured default)."""
    return target.approval_timeout_seconds or int(get_settings().approval_timeout_hours * 3600)


def ticket_deadline(ticket: AnyTicket, target: Target | TargetRow) -> datetime:
    """When a pending ticket on `target` times out."""
    return ticket.created_at + timedelta(seconds=approval_timeout_seconds(target))


def open_ticket(
    session: Session, release: Release, decision: PolicyDecision, risk_level: str
) -> ApprovalTicket:
    """Create the pending ticket for a submitted release."""
    ticket = ApprovalTicket(
        release_number=release.number,
        project_id=release.project_id,
        environment=release.target.environment,
        risk_level=risk_level,
        requested_by_id=release.requested_by_id,
        steps=[s.model_dump() for s in decision.steps],
        policy_reason=decision.reason,
        current_step=0,
        current_group=decision.steps[0].group,
        state=OPEN,
        decisions=[],  # known empty: reading the new ticket never loads them
    )
    session.add(ticket)
    session.flush()
    return ticket


# Built once: every decision, submit and sweep reads it.
_NEWEST_TICKET = (
    select(ApprovalTicket)
    .where(ApprovalTicket.release_number == bindparam("number"))
    .order_by(ApprovalTicket.id.desc())
    .limit(1)
)
# Decisions on one ticket queue up here, so a step's count is never raced. Its decisions come
# in the same statement (the lock stays on the ticket's row, in the inner SELECT): they were
# a statement of their own in every decision.
_NEWEST_TICKET_LOCKED = (
    _NEWEST_TICKET.with_for_update(of=ApprovalTicket)
    .options(joinedload(ApprovalTicket.decisions))
    .execution_options(populate_existing=True)  # one the session held is read again, locked
)
_NEWEST_TICKET_ALONE = _NEWEST_TICKET.options(lazyload(ApprovalTicket.decisions))


def current_ticket(
    session: Session, number: int, *, for_update: bool = False, decisions: bool = True
) -> ApprovalTicket | None:
    """The newest ticket of a release (older ones were voided by a changed diff); without
    `decisions`, they are not read with it."""
    if for_update:
        query = _NEWEST_TICKET_LOCKED
    else:
        query = _NEWEST_TICKET if decisions else _NEWEST_TICKET_ALONE
    return session.scalars(query, {"number": number}).first()


# A ticket's own lifecycle: state -> the states it may move to. Decided tickets stay decided.
TICKET_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"approved", "rejected", "cancelled", "expired", "void"}),
    "approved": frozenset({"cancelled", "expired", "void"}),
    "expired": frozenset({"pending", "approved", "void"}),
    "rejected": frozenset(),
    "cancelled": frozenset(),
    "void": frozenset(),
}


def move_ticket(ticket: ApprovalTicket, state: str) -> None:
    """Move a ticket along its transition table, or raise IllegalTransition."""
    if state not in TICKET_TRANSITIONS.get(ticket.state, frozenset()):
        raise IllegalTransition(
            f"the approval ticket of {release_id(ticket.release_number)} is {ticket.state}; "
            f"it cannot become {state}",
            current=ticket.state,
            release_id=release_id(ticket.release_number),
            action=state,
        )
    ticket.state = state


def set_ticket_state(
    session: Session, number: int, state: str, *, only_from: tuple[str, ...]
) -> None:
    """Move the release's current ticket to `state` if it is in one of `only_from`.

    One UPDATE (a superseding submit, a cancel or an expiry used to load the ticket and its
    decisions first); a loaded ticket object is kept in step. Every state of `only_from` may
    move to `state` in the ticket's own table, so no transition is skipped.
    """
    assert all(state in TICKET_TRANSITIONS[s] for s in only_from), (state, only_from)
    session.execute(_move_newest_ticket(state, tuple(only_from)), {"number": number})


@cache
def _move_newest_ticket(state: str, only_from: tuple[str, ...]) -> Update:
    """`set_ticket_state`'s UPDATE, built once per move. The state is a literal: the ORM's
    "fetch" sync writes a loaded ticket's new state from it (a bound parameter left None)."""
    newest = (
        select(func.max(ApprovalTicket.id))
        .where(ApprovalTicket.release_number == bindparam("number"))
        .scalar_subquery()
    )
    return (
        update(ApprovalTicket)
        .where(ApprovalTicket.id == newest, ApprovalTicket.state.in_(only_from))
        .values(state=state)
        .execution_options(synchronize_session="fetch")
    )


def approver_condition(
    user_id: ColumnElement[int] | InstrumentedAttribute[int] | int,
    project_id: ColumnElement[int] | InstrumentedAttribute[int] | int,
    group: ColumnElement[str | None] | InstrumentedAttribute[str | None] | str,
) -> ColumnElement[bool]:
    """SQL: the user holds an approver role on the project and belongs to the step's group.

    `approvers` is every project approver; other groups are declared (project-scoped or
    global). Used both to check one decision and to filter the inbox, so they never disagree.
    """
    has_role = exists().where(
        Grant.user_id == user_id,
        Grant.role.in_(APPROVER_ROLES),
        or_(Grant.project_id.is_(None), Grant.project_id == project_id),
    )

    def member(scope: ColumnElement[bool]) -> ColumnElement[bool]:
        return exists().where(
            GroupMember.user_id == user_id,
            GroupMember.group_id == Group.id,
            Group.name == group,
            scope,
        )

    # Two EXISTS, not one with `project_id IS NULL OR project_id = ...`: PostgreSQL hashes each
    # once per statement, where the OR made it rescan the caller's memberships for every
    # (ticket, user) pair: 2 ms of a page's deciders at 200 groups, now 0.3 ms.
    in_group = or_(member(Group.project_id == project_id), member(Group.project_id.is_(None)))
    group_expr = literal(group) if isinstance(group, str) else group
    return and_(has_role, or_(group_expr == "approvers", in_group))


def is_eligible(session: Session, user_id: int, project_id: int, group: str) -> bool:
    """Whether the user may decide a step naming `group` on the project."""
    params = {"user_id": user_id, "project_id": project_id, "group": group}
    return bool(session.scalar(_eligible(), params))


@cache
def _eligible() -> Select[bool]:
    # built once: every decision asks (building the EXISTS cost more than running it)
    return select(
        approver_condition(
            bindparam("user_id", type_=Integer),
            bindparam("project_id", type_=Integer),
            bindparam("group", type_=String),
        )
    )


def eligible_tickets(session: Session, user_id: int, ticket_ids: list[int]) -> set[int]:
    """Which of these tickets' current steps the user is eligible for, in one query."""
    if not ticket_ids:
        return set()
    condition = approver_condition(user_id, ApprovalTicket.project_id, ApprovalTicket.current_group)
    query = select(ApprovalTicket.id).where(ApprovalTicket.id.in_(ticket_ids), condition)
    return set(session.scalars(query))


def deciders_of(session: Session, tickets: Sequence[AnyTicket]) -> dict[int, dict[int, str]]:
    """Who may decide each waiting ticket's current step now ({user id: name}), in one query.

    The same people `can_decide` admits (eligible, not the requester, not decided yet), so a
    page also learns which tickets its reader may decide without asking again.
    """
    waiting = [t.id for t in tickets if t.state == OPEN and t.current_group is not None]
    found: dict[int, dict[int, str]] = {ticket_id: {} for ticket_id in waiting}
    if not waiting:
        return found
    one, ids = among_values(waiting)
    for ticket_id, user_id, name in plain_rows(session, _deciders_of(one), {"waiting": ids}):
        found[ticket_id][user_id] = name
    return found


@cache
def _deciders_of(one: bool) -> Select[Any]:
    # built once (a page runs it every time; a reused statement keeps its cache key)
    decided = exists().where(
        ApprovalDecision.ticket_id == ApprovalTicket.id, ApprovalDecision.user_id == User.id
    )
    columns: tuple[Any, ...] = (ApprovalTicket.id, User.id, User.name)
    return select(*columns).where(
        among(ApprovalTicket.id, "waiting", one),
        User.id != ApprovalTicket.requested_by_id,
        ~decided,
        approver_condition(User.id, ApprovalTicket.project_id, ApprovalTicket.current_group),
    )


def decidable_by(deciders: dict[int, dict[int, str]], user_id: int | None) -> set[int]:
    """The tickets among `deciders_of`'s answer this user may decide now."""
    return {ticket_id for ticket_id, users in deciders.items() if user_id in users}


def can_decide(
    session: Session, actor: Actor, ticket: AnyTicket, eligible: bool | None = None
) -> bool:
    """Pending, not the requester's own, not already decided by them, and eligible.

    `eligible` may be precomputed for a page of tickets by `eligible_tickets`.
    """
    if ticket.state != OPEN or actor.user_id is None or ticket.current_group is None:
        return False
    if actor.user_id == ticket.requested_by_id:
        return False
    if any(d.user_id == actor.user_id for d in ticket.decisions):
        return False
    if eligible is None:
        eligible = is_eligible(session, actor.user_id, ticket.project_id, ticket.current_group)
    return eligible


def ticket_fields(
    session: Session,
    ticket: AnyTicket,
    release: AnyRelease,
    actor: Actor,
    preview: Preview | PreviewRow | None = None,
    eligible: bool | None = None,
    deciders: dict[int, str] | None = None,
) -> dict[str, Any]:
    """The ticket as the inbox and approval views show it (an `ApprovalRead`'s fields; a page
    validates all its items in one pydantic call, not one model per ticket, step and decision).
    `eligible` and `deciders` are batch-loaded for a page by `deciders_of`."""
    waiting = ticket.state == OPEN and ticket.current_group is not None
    steps = []
    for index, step in enumerate(ticket.steps):
        names = [
            d.user.name
            for d in ticket.decisions
            if d.step_index == index and d.decision == "approve"
        ]
        steps.append(
            {
                "group": step["group"],
                "count": step["count"],
                "approved_by": names,
                "done": len(names) >= step["count"],
            }
        )
    return {
        "ticket_id": ticket.id,
        "release_id": release_id(release.number),
        "project": release.project.name,
        "environment": ticket.environment,
        "risk": ticket.risk_level,
        "state": ticket.state,
        "lifecycle_state": release.lifecycle_state,
        "requested_by": ticket.requested_by.name,
        "assignee": ticket.assignee.name if ticket.assignee else None,
        "policy_reason": ticket.policy_reason,
        "steps": steps,
        "current_step": ticket.current_step,
        "decisions": [
            {
                "user": d.user.name,
                "decision": d.decision,
                "step": d.step_index,
                "comment": d.comment,
                "channel": d.channel,
                "at": d.created_at,
            }
            for d in ticket.decisions
        ],
        "changes": dict(release.changes),
        "created_at": ticket.created_at,
        "expires_at": preview.expires_at if preview else None,
        "times_out_at": ticket_deadline(ticket, release.target) if ticket.state == OPEN else None,
        "waiting_step": ticket.current_step + 1 if waiting else None,
        "waiting_for": ticket.current_group if waiting else None,
        "deciders": (
            (sorted(deciders.values()) if deciders is not None else decider_names(session, ticket))
            if waiting
            else []
        ),
        "can_decide": can_decide(session, actor, ticket, eligible),
    }


def decided_by(user_id: int) -> ColumnElement[bool]:
    """SQL: the user already decided on the ticket."""
    return exists().where(
        ApprovalDecision.ticket_id == ApprovalTicket.id, ApprovalDecision.user_id == user_id
    )


def eligible_approvers(session: Session, ticket: ApprovalTicket) -> list[int]:
    """Ids of the users who may decide the ticket's current step now."""
    return [user_id for user_id, _ in _deciders(session, ticket)]


def decider_names(session: Session, ticket: AnyTicket) -> list[str]:
    """Names of the people who may decide the ticket's current step now."""
    return sorted(name for _, name in _deciders(session, ticket))


def _deciders(session: Session, ticket: AnyTicket) -> list[tuple[int, str]]:
    if ticket.state != OPEN or ticket.current_group is None:
        return []
    params = {
        "ticket_id": ticket.id,
        "requester": ticket.requested_by_id,
        "project_id": ticket.project_id,
        "group": ticket.current_group,
    }
    return [(row[0], row[1]) for row in session.execute(_deciders_of_one(), params)]


@cache
def _deciders_of_one() -> Select[int, str]:
    # built once: every card fan-out and every settled card asks
    decided = exists().where(
        ApprovalDecision.ticket_id == bindparam("ticket_id"), ApprovalDecision.user_id == User.id
    )
    return (
        select(User.id, User.name)
        .where(
            User.id != bindparam("requester"),
            ~decided,
            approver_condition(
                User.id, bindparam("project_id", type_=Integer), bindparam("group", type_=String)
            ),
        )
        .order_by(User.id)
    )

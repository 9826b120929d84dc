"""Approval tickets and their decisions as plain rows (see core.releases.rows): the inbox and
release pages build their approval views from these, not from ORM entities."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, aliased

from core.approvals.models import ApprovalDecision, ApprovalTicket
from core.db import AnyRow, OneOf, among, among_values, plain_rows
from core.identity.models import User
from core.releases.rows import Named


class DecisionRow(NamedTuple):
    """One decision on a ticket, with its decider's name."""

    user_id: int
    step_index: int
    decision: str
    comment: str | None
    channel: str
    created_at: datetime
    user: Named


class TicketRow(NamedTuple):
    """An approval ticket with its requester, assignee and decisions (oldest first)."""

    id: int
    release_number: int
    project_id: int
    environment: str
    risk_level: str
    requested_by_id: int
    steps: list[dict[str, Any]]
    policy_reason: str
    current_step: int
    current_group: str | None
    state: str
    created_at: datetime
    requested_by: Named
    assignee: Named | None
    decisions: list[DecisionRow]


_Requester = aliased(User, name="requester")
_Assignee = aliased(User, name="assignee")


def ticket_columns(ticket: Any, requester: Any, assignee: Any) -> tuple[Any, ...]:
    """A ticket row's columns, from these aliases of the ticket and its two users."""
    return (
        ticket.id,
        ticket.release_number,
        ticket.project_id,
        ticket.environment,
        ticket.risk_level,
        ticket.requested_by_id,
        ticket.steps,
        ticket.policy_reason,
        ticket.current_step,
        ticket.current_group,
        ticket.state,
        ticket.created_at,
        requester.name.label("requester_name"),
        assignee.name.label("assignee_name"),
    )


TICKET_COLUMNS = ticket_columns(ApprovalTicket, _Requester, _Assignee)
TICKET_WIDTH = len(TICKET_COLUMNS)

# Positions: the ticket's own fields first, in TicketRow's order; then the two names.
_OWN = len(TicketRow._fields) - 3
assert [c.key for c in TICKET_COLUMNS] == [
    *TicketRow._fields[:_OWN],
    "requester_name",
    "assignee_name",
]


@cache
def ticket_select() -> Select[Any]:
    """SELECT of ticket rows joined with requester and assignee; filter and order it (built
    once: see core.releases.rows.release_select)."""
    return (
        select(*TICKET_COLUMNS)
        .join(_Requester, _Requester.id == ApprovalTicket.requested_by_id)
        .outerjoin(_Assignee, _Assignee.id == ApprovalTicket.assignee_id)
    )


DECISION_COLUMNS: tuple[Any, ...] = (
    ApprovalDecision.ticket_id,
    ApprovalDecision.user_id,
    ApprovalDecision.step_index,
    ApprovalDecision.decision,
    ApprovalDecision.comment,
    ApprovalDecision.channel,
    ApprovalDecision.created_at,
    User.name,
)
assert [c.key for c in DECISION_COLUMNS[1:-1]] == list(DecisionRow._fields[:-1])


@cache
def _decisions(one: bool) -> Select[Any]:
    return (
        select(*DECISION_COLUMNS)
        .join(User, User.id == ApprovalDecision.user_id)
        .where(among(ApprovalDecision.ticket_id, "tickets", one))
        .order_by(ApprovalDecision.id)
    )


@cache
def _newest_tickets() -> Select[Any]:
    newest = (
        select(func.max(ApprovalTicket.id))
        .where(OneOf(ApprovalTicket.release_number, "numbers"))
        .group_by(ApprovalTicket.release_number)
    )
    return ticket_select().where(ApprovalTicket.id.in_(newest))


def ticket_rows(
    session: Session, query: Select[Any], params: dict[str, Any] | None = None
) -> list[TicketRow]:
    """The rows of a `ticket_select` query with their decisions (one more statement)."""
    return with_decisions(session, [ticket_from(row) for row in plain_rows(session, query, params)])


def with_newest_ticket(query: Select[Any], number: Any) -> Select[Any]:
    """`query` with the newest ticket of release `number` outer-joined: `TICKET_WIDTH` more
    columns, which `ticket_from(row, at)` reads (its decisions are `with_decisions`')."""
    older = aliased(ApprovalTicket, name="older_ticket")
    newest = (
        select(func.max(older.id))
        .where(older.release_number == number)
        .correlate_except(older)
        .scalar_subquery()
    )
    ticket = aliased(ApprovalTicket, name="newest_ticket")
    requester = aliased(User, name="ticket_requester")
    assignee = aliased(User, name="ticket_assignee")
    return (
        query.add_columns(*ticket_columns(ticket, requester, assignee))
        .outerjoin(ticket, ticket.id == newest)
        .outerjoin(requester, requester.id == ticket.requested_by_id)
        .outerjoin(assignee, assignee.id == ticket.assignee_id)
    )


def ticket_from(row: AnyRow | tuple[Any, ...], at: int = 0) -> TicketRow:
    """The ticket in `TICKET_COLUMNS` from position `at` of `row`, without its decisions."""
    fields = tuple(row)[at : at + TICKET_WIDTH]
    requester, assignee = fields[_OWN], fields[_OWN + 1]
    named = Named(assignee) if assignee is not None else None
    return TicketRow._make((*fields[:_OWN], Named(requester), named, []))


def with_decisions(session: Session, tickets: list[TicketRow]) -> list[TicketRow]:
    """These tickets with their decisions, oldest first (one statement, none for no ticket)."""
    if tickets:
        by_id = {t.id: t.decisions for t in tickets}
        one, ids = among_values(list(by_id))
        for d in plain_rows(session, _decisions(one), {"tickets": ids}):
            by_id[d[0]].append(DecisionRow._make((*d[1:7], Named(d[7]))))
    return tickets


def newest_ticket_rows(session: Session, numbers: list[int]) -> dict[int, TicketRow]:
    """The newest ticket of each release (older ones were voided), by release number."""
    if not numbers:
        return {}
    found = ticket_rows(session, _newest_tickets(), {"numbers": numbers})
    return {t.release_number: t for t in found}

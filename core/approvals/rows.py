"""Approval tickets and their decisions as plain rows (see core.releases.rows): the inbox and
release pages build their approval views from these, not from ORM entities."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, aliased

from core.approvals.models import ApprovalDecision, ApprovalTicket
from core.db import OneOf, plain_rows
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

TICKET_COLUMNS = (
    ApprovalTicket.id,
    ApprovalTicket.release_number,
    ApprovalTicket.project_id,
    ApprovalTicket.environment,
    ApprovalTicket.risk_level,
    ApprovalTicket.requested_by_id,
    ApprovalTicket.steps,
    ApprovalTicket.policy_reason,
    ApprovalTicket.current_step,
    ApprovalTicket.current_group,
    ApprovalTicket.state,
    ApprovalTicket.created_at,
    _Requester.name.label("requester_name"),
    _Assignee.name.label("assignee_name"),
)


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
def _decisions() -> Select[Any]:
    return (
        select(*DECISION_COLUMNS)
        .join(User, User.id == ApprovalDecision.user_id)
        .where(OneOf(ApprovalDecision.ticket_id, "tickets"))
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
    rows = plain_rows(session, query, params)
    decisions: dict[int, list[DecisionRow]] = {row[0]: [] for row in rows}
    if decisions:
        for d in plain_rows(session, _decisions(), {"tickets": list(decisions)}):
            decisions[d[0]].append(DecisionRow._make((*d[1:7], Named(d[7]))))
    return [
        TicketRow._make(
            (
                *row[:_OWN],
                Named(row[_OWN]),
                Named(row[_OWN + 1]) if row[_OWN + 1] is not None else None,
                decisions[row[0]],
            )
        )
        for row in rows
    ]


def newest_ticket_rows(session: Session, numbers: list[int]) -> dict[int, TicketRow]:
    """The newest ticket of each release (older ones were voided), by release number."""
    if not numbers:
        return {}
    found = ticket_rows(session, _newest_tickets(), {"numbers": numbers})
    return {t.release_number: t for t in found}

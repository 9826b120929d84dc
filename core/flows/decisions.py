"""Approval decisions and the global inbox."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.approvals.models import ApprovalDecision, ApprovalTicket
from core.approvals.rows import ticket_rows, ticket_select
from core.approvals.tickets import (
    OPEN,
    approver_condition,
    current_ticket,
    decidable_by,
    decided_by,
    deciders_of,
    is_eligible,
    move_ticket,
    ticket_fields,
)
from core.audit.service import record
from core.db import utcnow, written
from core.errors import Conflict, InvalidInput, NotFound, PermissionDenied, ShipdeckError
from core.events import queue_event
from core.flows.apply import applies_on_approval, apply_if_automatic
from core.flows.preview import ensure_fresh, stale
from core.flows.runner import ApplyRunner
from core.flows.views import committed_view, view
from core.identity.service import person
from core.ids import parse_release_id, release_id
from core.permissions import Action, Actor, require
from core.releases.lifecycle import (
    State,
    illegal_transition,
    normalize_state,
    release_event,
    transition,
)
from core.releases.locks import lock_releases
from core.releases.models import Release
from core.releases.queries import current_preview, load_release, missing_release
from core.releases.rows import release_rows_by_number
from core.releases.schemas import ApprovalPage, ReleaseRead
from core.targets.frozen import frozen_as_read
from core.targets.models import Project

TICKET_STATES = ("pending", "approved", "rejected", "cancelled", "expired", "void")
MAX_BATCH = 100


def _open_ticket_for(
    session: Session, actor: Actor, release: str | int, action: str
) -> tuple[Release, ApprovalTicket]:
    """Lock a release and its open ticket, and check that the actor may decide on it now.

    The release is read once, locked. One the actor cannot see is answered here exactly as a
    missing one, and is not locked: its tools run no visibility check before (it read the
    release a second time).
    """
    number = parse_release_id(release)
    # Lock order (core.releases.locks): the release row, then its ticket. A superseding submit
    # or a cancel takes them in that order too; the other way round they deadlock. A release
    # the actor cannot see is neither read nor locked.
    locked = lock_releases(session, [number], seen_by=actor)
    if not locked:
        raise missing_release(number)
    found = locked[0]
    require(actor, Action.approve, found.project_id, found.project.name)
    ticket = current_ticket(session, number, for_update=True)
    state = normalize_state(found.lifecycle_state)
    if state != State.pending_approval or ticket is None or ticket.state != OPEN:
        raise illegal_transition(found, action, state)
    if actor.user_id == found.requested_by_id:
        raise PermissionDenied(
            f"{actor.name} requested {release_id(number)} and can never {action} it",
            reason="self_approval",
        )
    if any(d.user_id == actor.user_id for d in ticket.decisions):
        raise Conflict(
            f"{actor.name} already decided on {release_id(number)}; one person counts once",
            release_id=release_id(number),
        )
    group = ticket.current_group or ""
    if actor.user_id is None or not is_eligible(session, actor.user_id, ticket.project_id, group):
        raise PermissionDenied(
            f"{actor.name} is not an eligible approver for step {ticket.current_step + 1} "
            f"({group}) of {release_id(number)}",
            group=group,
            step=ticket.current_step + 1,
        )
    return found, ticket


def approve_release(
    session: Session,
    *,
    actor: Actor,
    runner: ApplyRunner | None,
    release: str,
    comment: str | None = None,
) -> ReleaseRead:
    """Record an approval on the current step; the last step approves the release. Commits.

    A stale preview is re-previewed first: an unchanged diff keeps the decisions and the
    approval goes on; a changed one voids them and raises `PreviewChanged` with the new diff.
    """
    found, ticket = _open_ticket_for(session, actor, release, "approve")
    preview = current_preview(session, found.number)
    if runner is not None and stale(preview):
        session.rollback()  # never hold the ticket's lock while the runtime plans
        ensure_fresh(session, actor=actor, runtimes=runner.runtimes, release=found)
        found, ticket = _open_ticket_for(session, actor, found.number, "approve")
        preview = current_preview(session, found.number)
    step = ticket.current_step
    # The ticket is locked (no one else decides on it until this commits) and its decisions
    # were read under that lock: with this one appended they are all there are (re-reading
    # the ticket and its decisions after the INSERT took two statements).
    ticket.decisions.append(
        ApprovalDecision(
            ticket_id=ticket.id,
            user=person(session, actor),
            step_index=step,
            decision="approve",
            comment=comment,
            channel=actor.channel.value,
        )
    )
    session.flush()
    approvals = sum(1 for d in ticket.decisions if d.step_index == step and d.decision == "approve")
    data = {"step": step + 1, "group": ticket.current_group, "comment": comment}
    if approvals >= ticket.steps[step]["count"]:
        ticket.current_step = step + 1
    if ticket.current_step >= len(ticket.steps):
        move_ticket(ticket, "approved")
        ticket.current_group, ticket.decided_at = None, utcnow()
        transition(session, found, action="approve", to=State.approved, actor=actor, data=data)
    else:
        ticket.current_group = ticket.steps[ticket.current_step]["group"]
        if ticket.current_step > step:  # the next step's approvers are wanted now
            data_next = {"ticket_id": ticket.id, "group": ticket.current_group}
            queue_event(session, release_event(found, "approval_requested", data_next))
        record(
            session,
            actor=actor,
            action="approve",
            project=found.project.name,
            release_number=found.number,
            before=found.lifecycle_state,
            after=found.lifecycle_state,
            data={**data, "next_step": ticket.current_step + 1},
        )
    if found.lifecycle_state == State.approved.value and applies_on_approval(found, runner):
        session.commit()
        apply_if_automatic(session, found, actor=actor, runner=runner)
        return view(session, load_release(session, found.number), actor)
    return committed_view(session, found, actor, preview, ticket)


def reject_release(
    session: Session, *, actor: Actor, release: str, reason: str | None = None
) -> ReleaseRead:
    """Reject at the current step; the ticket and the release end `rejected`. Commits."""
    found, ticket = _open_ticket_for(session, actor, release, "reject")
    ticket.decisions.append(
        ApprovalDecision(
            ticket_id=ticket.id,
            user=person(session, actor),
            step_index=ticket.current_step,
            decision="reject",
            comment=reason,
            channel=actor.channel.value,
        )
    )
    move_ticket(ticket, "rejected")
    ticket.decided_at = utcnow()
    text = reason or f"rejected by {actor.name}"
    transition(
        session,
        found,
        action="reject",
        to=State.rejected,
        actor=actor,
        data={"step": ticket.current_step + 1, "group": ticket.current_group, "reason": reason},
        values={"reason": text},
    )
    return committed_view(session, found, actor, current_preview(session, found.number), ticket)


def takeover_ticket(session: Session, *, actor: Actor, release: str) -> ReleaseRead:
    """Make the actor the ticket's assignee (another eligible approver takes it over). Commits."""
    found, ticket = _open_ticket_for(session, actor, release, "take over")
    previous = ticket.assignee.name if ticket.assignee else None
    ticket.assignee = person(session, actor)
    record(
        session,
        actor=actor,
        action="takeover",
        project=found.project.name,
        release_number=found.number,
        before=found.lifecycle_state,
        after=found.lifecycle_state,
        data={"from": previous, "to": actor.name},
    )
    return committed_view(session, found, actor, current_preview(session, found.number), ticket)


class BatchItem(BaseModel):
    """The outcome of one release in a batch decision."""

    release_id: str
    ok: bool
    lifecycle_state: str | None = None
    error: dict[str, object] | None = None


def decide_batch(
    session: Session,
    *,
    actor: Actor,
    runner: ApplyRunner | None,
    releases: list[str],
    decision: str,
    comment: str | None = None,
) -> list[BatchItem]:
    """Approve or reject several releases; each is its own decision and audit event."""
    if not releases or len(releases) > MAX_BATCH:
        raise InvalidInput(f"a batch holds 1 to {MAX_BATCH} releases")
    if decision not in ("approve", "reject"):
        raise InvalidInput("decision must be approve or reject")
    ids = [release_id(parse_release_id(r)) for r in releases]
    if len(set(ids)) != len(ids):
        raise InvalidInput("a release is listed twice in the batch")
    results: list[BatchItem] = []
    for rid in ids:
        try:
            if decision == "approve":
                read = approve_release(
                    session, actor=actor, runner=runner, release=rid, comment=comment
                )
            else:
                read = reject_release(session, actor=actor, release=rid, reason=comment)
            results.append(BatchItem(release_id=rid, ok=True, lifecycle_state=read.lifecycle_state))
        except ShipdeckError as exc:
            session.rollback()
            results.append(
                BatchItem(
                    release_id=rid,
                    ok=False,
                    error={"code": exc.code, "message": exc.message, "details": exc.details},
                )
            )
    return results


def inbox(
    session: Session,
    *,
    actor: Actor,
    project: str | None = None,
    environment: str | None = None,
    risk: str | None = None,
    state: str | None = None,
    mine: bool = False,
    limit: int = 50,
    before: int | None = None,
) -> ApprovalPage:
    """The global approval inbox, newest first, filtered; `mine` = I can decide or I asked."""
    query = ticket_select()
    if project is not None:
        pid = session.scalars(select(Project.id).where(Project.name == project.lower())).first()
        if pid is None:
            raise NotFound(f"no project named {project!r}", project=project)
        query = query.where(ApprovalTicket.project_id == pid)
    if environment is not None:
        query = query.where(ApprovalTicket.environment == environment.lower())
    if risk is not None:
        if risk not in ("low", "medium", "high"):
            raise InvalidInput("risk must be low, medium or high", risk=risk)
        query = query.where(ApprovalTicket.risk_level == risk)
    if state is not None:
        if state not in TICKET_STATES:
            raise InvalidInput(f"state must be one of {', '.join(TICKET_STATES)}", state=state)
        query = query.where(ApprovalTicket.state == state)
    if before is not None:
        query = query.where(ApprovalTicket.id < before)
    if (visible := actor.visible_projects()) is not None:
        query = query.where(ApprovalTicket.project_id.in_(visible))
    if mine and actor.user_id is not None:
        can_decide_now = (
            (ApprovalTicket.state == OPEN)
            & (ApprovalTicket.requested_by_id != actor.user_id)
            & ~decided_by(actor.user_id)
            & approver_condition(
                actor.user_id, ApprovalTicket.project_id, ApprovalTicket.current_group
            )
        )
        query = query.where(
            or_(
                ApprovalTicket.requested_by_id == actor.user_id,
                ApprovalTicket.assignee_id == actor.user_id,
                can_decide_now,
            )
        )
    tickets = ticket_rows(
        session, query.order_by(ApprovalTicket.id.desc()).limit(written(limit + 1))
    )
    more = len(tickets) > limit
    tickets = tickets[:limit]
    numbers = [t.release_number for t in tickets]
    releases = release_rows_by_number(session, numbers)
    previews = {n: r.preview for n, r in releases.items() if r.preview is not None}
    deciders = deciders_of(session, tickets)
    eligible = decidable_by(deciders, actor.user_id)
    frozen = frozen_as_read([r.target for r in releases.values()], utcnow())  # read with them
    items = []
    for t in tickets:
        release = releases[t.release_number]
        item = ticket_fields(
            session,
            t,
            release,
            actor,
            previews.get(t.release_number),
            t.id in eligible,
            deciders.get(t.id, {}),
        )
        item["frozen"] = frozen.get(release.target_id)
        items.append(item)
    # one validation for the whole page, not one model per ticket, step and decision
    return ApprovalPage.model_validate(
        {"items": items, "next_before": tickets[-1].id if more and tickets else None}
    )

"""What a caller may do with a release now: the one rule set pages and cards read.

Each answer mirrors the checks of the call it names (role, requester/approver, state, ticket
eligibility), so an action listed here is never refused for permission or state, and an action
left out always is. Tests hold the two together.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.approvals.tickets import AnyRelease, AnyTicket, can_decide, current_ticket
from core.permissions import Action, Actor
from core.releases.lifecycle import WAITING, State, allowed, normalize_state

ACTIONS = (
    "submit",
    "cancel",
    "apply",
    "repreview",
    "rollback",
    "retry",
    "approve",
    "reject",
    "takeover",
    "abandon",
)
RETRYABLE = (State.failed,)
ROLLBACK_FROM = (State.applied, State.failed)


def allowed_actions(
    session: Session,
    actor: Actor,
    release: AnyRelease,
    *,
    ticket: AnyTicket | None = None,
    decidable: bool | None = None,
) -> list[str]:
    """The actions `actor` may take on `release` now, in a stable order.

    `ticket` and `decidable` may be passed when the caller already computed them.
    """
    state = normalize_state(release.lifecycle_state)
    project = release.project_id
    requests = actor.can(Action.request, project)
    owner_or_approver = actor.user_id == release.requested_by_id or actor.can(
        Action.approve, project
    )
    acts: set[str] = set()
    if requests and (actor.user_id == release.requested_by_id or actor.is_admin):
        if allowed(state, "submit"):
            acts.add("submit")
    if requests and owner_or_approver:
        if state in WAITING:
            acts.add("cancel")
        expired_approved = state == State.expired and release.expired_from == State.approved
        if allowed(state, "apply") or expired_approved:
            acts.add("apply")
        if allowed(state, "repreview"):
            acts.add("repreview")
    if requests and state in ROLLBACK_FROM:
        acts.add("rollback")
    if requests and state in RETRYABLE:
        acts.add("retry")
    if state == State.pending_approval and actor.can(Action.approve, project):
        if decidable is None:
            ticket = ticket or current_ticket(session, release.number)
            decidable = ticket is not None and can_decide(session, actor, ticket)
        if decidable:
            acts.update(("approve", "reject", "takeover"))
    if actor.is_admin and allowed(state, "abandon"):
        acts.add("abandon")
    return [a for a in ACTIONS if a in acts]

"""A ticket follows its release: the release's transitions move its approval ticket."""

from __future__ import annotations

from core.approvals.tickets import set_ticket_state
from core.releases.lifecycle import State, Step, after

S = State
WAITING_TICKET = ("pending", "approved")


@after(targets={S.cancelled})
def cancelled(step: Step) -> None:
    """A withdrawn or superseded release closes its ticket."""
    set_ticket_state(step.session, step.release.number, "cancelled", only_from=WAITING_TICKET)


@after(targets={S.expired})
def expired(step: Step) -> None:
    """A release that expired takes its ticket with it (re-preview may bring it back)."""
    set_ticket_state(step.session, step.release.number, "expired", only_from=WAITING_TICKET)


@after(sources={S.pending_approval, S.approved, S.expired}, targets={S.previewed})
def voided(step: Step) -> None:
    """A re-preview whose diff changed voids the decisions made on the old diff."""
    set_ticket_state(
        step.session, step.release.number, "void", only_from=(*WAITING_TICKET, "expired")
    )


@after(sources={S.expired}, targets={S.pending_approval, S.approved})
def restored(step: Step) -> None:
    """Re-previewed with the same diff: the ticket waits (or stands approved) again."""
    state = "approved" if step.to == S.approved else "pending"
    set_ticket_state(step.session, step.release.number, state, only_from=("expired",))

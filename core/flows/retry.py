"""Retry: re-preview a failed release's spec as a new release."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core.flows.actions import RETRYABLE
from core.flows.preview import preview_release
from core.permissions import Action, Actor, require
from core.releases.lifecycle import illegal_transition, normalize_state
from core.releases.queries import load_release
from core.releases.schemas import ReleaseRead
from runtimes.base import ServiceChange
from runtimes.registry import RuntimeRegistry


def retry_release(
    session: Session, *, actor: Actor, runtimes: RuntimeRegistry, release: str
) -> ReleaseRead:
    """Preview the same change as a failed release, as a new release the caller requests.

    The new release goes through submit and policy like any other; it names the failed one in
    `retry_of`. A failed rollback is retried as a plain restore of the same spec (its original
    already ended `rollback_failed`), never as an emergency. Commits.
    """
    found = load_release(session, release)
    require(actor, Action.request, found.project_id, found.project.name)
    state = normalize_state(found.lifecycle_state)
    if state not in RETRYABLE:
        raise illegal_transition(found, "retry", state, [s.value for s in RETRYABLE])
    changes = {k: ServiceChange.model_validate(v) for k, v in found.changes.items()}
    return preview_release(
        session,
        actor=actor,
        runtimes=runtimes,
        project=found.project.name,
        environment=found.target.environment,
        changes=changes,
        kind=found.kind,
        retry_of=found.number,
    )

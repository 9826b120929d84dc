"""Apply: start an approved, fresh, undrifted release exactly once; abandon a dead apply."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.audit.service import record
from core.db import db_now
from core.errors import (
    Conflict,
    DriftDetected,
    PermissionDenied,
    RuntimeFailure,
)
from core.flows.expiry import check_not_expired
from core.flows.views import view
from core.ids import release_id
from core.permissions import SYSTEM, Action, Actor, require
from core.releases.lifecycle import (
    State,
    allowed,
    illegal_transition,
    normalize_state,
    transition,
)
from core.releases.models import Preview, Release
from core.releases.queries import (
    active_release,
    current_preview,
    load_release,
    require_requester_or_approver,
)
from core.releases.schemas import ReleaseRead
from core.targets.service import adapter_for, call_runtime, target_ref
from core.text import first_line
from runtimes.base import (
    LiveState,
)
from runtimes.registry import RuntimeRegistry

if TYPE_CHECKING:
    from core.flows.runner import ApplyRunner

log = logging.getLogger(__name__)


def apply_release(
    session: Session,
    *,
    actor: Actor,
    runtimes: RuntimeRegistry,
    runner: ApplyRunner,
    release: str,
) -> ReleaseRead:
    """Start applying an approved release whose preview is fresh and matches live state.

    The state moves to `applying` by compare-and-set, so concurrent calls apply once; the
    runner then drives the runtime. Commits.
    """
    found = load_release(session, release)
    require(actor, Action.request, found.project_id, found.project.name)
    require_requester_or_approver(actor, found, "apply")
    state = normalize_state(found.lifecycle_state)
    if not allowed(state, "apply"):
        raise illegal_transition(found, "apply", state)
    check_not_expired(session, found, actor)
    preview = current_preview(session, found.number)
    if preview is None:
        raise illegal_transition(found, "apply", state)
    adapter = adapter_for(runtimes, found.target)
    ref = target_ref(found.target)
    services = list(preview.desired)
    version = found.version
    session.commit()
    live = call_runtime("read the live state", lambda: adapter.describe(ref))
    # The adapter's fingerprint covers the desired-side inputs too (rendered compose config,
    # live object specs), not only the live state `describe` returns.
    current = call_runtime("read the live state", lambda: adapter.fingerprint(ref, services))
    _check_drift(found, preview, live, services, current)
    found = load_release(session, found.number)
    if found.version != version:
        raise illegal_transition(found, "apply", normalize_state(found.lifecycle_state))
    base = {s: live.services[s].model_dump(include={"image", "replicas", "env"}) for s in services}
    try:
        transition(
            session,
            found,
            action="apply",
            to=State.applying,
            actor=actor,
            data={"base_fingerprint": preview.base_fingerprint},
            values={
                "base_spec": base,
                "claimed_by": runner.worker_id,
                "lease_expires_at": db_now(session) + runner.lease,
            },
        )
        session.commit()
    except IntegrityError:
        session.rollback()
        busy = active_release(session, found.target_id)
        raise Conflict(
            f"{busy or 'another release'} is applying on {found.project.name}/"
            f"{found.target.environment}; one release applies per target at a time",
            active_release=busy,
        ) from None
    runner.start(found.number)
    return view(session, found, actor)


def _check_drift(
    release: Release, preview: Preview, live: LiveState, services: list[str], current: str
) -> None:
    if current == preview.base_fingerprint:
        return
    raise DriftDetected(
        f"the live state of {release.project.name}/{release.target.environment} changed since "
        f"{release_id(release.number)} was previewed; re-preview it to continue",
        release_id=release_id(release.number),
        live={s: live.services[s].model_dump(include={"image", "replicas"}) for s in services},
    )


def apply_if_automatic(
    session: Session, release: Release, *, actor: Actor, runner: ApplyRunner | None
) -> None:
    """Apply at once when the target's policy says to apply on approval."""
    if runner is None or not release.target.apply_on_approval:
        return
    on_behalf = Actor(
        SYSTEM.user_id, SYSTEM.name, SYSTEM.grants, SYSTEM.channel, actor.request_id, actor.name
    )
    try:
        apply_release(
            session,
            actor=on_behalf,
            runtimes=runner.runtimes,
            runner=runner,
            release=str(release.number),
        )
    except (Conflict, RuntimeFailure) as exc:
        session.rollback()
        record(
            session,
            actor=on_behalf,
            action="auto_apply_refused",
            project=release.project.name,
            release_number=release.number,
            data={"reason": str(exc)},
        )
        session.commit()


def abandon_release(session: Session, *, actor: Actor, release: str, reason: str) -> ReleaseRead:
    """End an `applying` release an admin knows is dead: failed, claim cleared, audited. Commits.

    A worker still driving it loses its claim and writes nothing more.
    """
    found = load_release(session, release)
    if not actor.is_admin:
        raise PermissionDenied("only an admin may abandon an applying release")
    state = normalize_state(found.lifecycle_state)
    if not allowed(state, "abandon"):
        raise illegal_transition(found, "abandon", state)
    text = f"abandoned by {actor.name}: {reason}"
    transition(
        session,
        found,
        action="abandon",
        to=State.failed,
        actor=actor,
        data={"reason": first_line(text)},
        values={"reason": text, "claimed_by": None, "lease_expires_at": None},
    )
    session.commit()
    log.warning("%s abandoned by %s", release_id(found.number), actor.name)
    return view(session, found, actor)

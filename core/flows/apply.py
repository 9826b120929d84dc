"""Apply: start an approved, fresh, undrifted release exactly once; abandon a dead apply."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from core.audit.service import record
from core.db import db_now, utcnow
from core.errors import (
    Conflict,
    DriftDetected,
    Frozen,
    PermissionDenied,
    RuntimeFailure,
    ShipdeckError,
)
from core.events import queue_event
from core.flows.freezes import check_not_frozen
from core.flows.preview import ensure_fresh
from core.flows.promotion import check_promotion
from core.flows.views import view
from core.ids import release_id
from core.permissions import SYSTEM, Action, Actor, require
from core.releases.lifecycle import (
    State,
    allowed,
    illegal_transition,
    normalize_state,
    release_event,
    transition,
)
from core.releases.locks import lock_releases
from core.releases.models import Preview, Release
from core.releases.queries import (
    active_release,
    current_preview,
    load_release,
    queued_ahead,
    require_requester_or_approver,
)
from core.releases.schemas import ReleaseRead
from core.targets.service import adapter_for, call_runtime, target_ref
from core.text import first_line
from runtimes.base import FieldChange, LiveState, Plan, ServiceSpec, TargetRef
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

    A stale preview is re-previewed first (unchanged diff: go on; changed: `PreviewChanged`).
    When the target is busy, or others queued first, the release waits `approved` in the
    target's apply queue and the runner applies it when its turn comes. The state moves to
    `applying` by compare-and-set, so concurrent calls apply once. Commits.
    """
    found = load_release(session, release)
    require(actor, Action.request, found.project_id, found.project.name)
    require_requester_or_approver(actor, found, "apply")
    state = normalize_state(found.lifecycle_state)
    expired_approved = state == State.expired and found.expired_from == State.approved.value
    if not allowed(state, "apply") and not expired_approved:
        raise illegal_transition(found, "apply", state)
    found = ensure_fresh(session, actor=actor, runtimes=runtimes, release=found)
    state = normalize_state(found.lifecycle_state)
    if not allowed(state, "apply"):
        raise illegal_transition(found, "apply", state)
    check_not_frozen(session, found, actor, "apply")
    check_promotion(session, found, actor)
    busy = active_release(session, found.target_id)
    if busy == release_id(found.number):  # another call started this very release
        raise illegal_transition(found, "apply", State.applying)
    ahead = queued_ahead(session, found)
    if busy is not None or ahead:
        _enqueue(session, found, actor, busy or ahead[0])
        session.commit()
        if busy is None:  # the target is free but the queue did not move: move it now
            apply_next(session, runner=runner, target_id=found.target_id)
        return view(session, load_release(session, found.number), actor)
    preview = current_preview(session, found.number)
    if preview is None:
        raise illegal_transition(found, "apply", state)
    adapter = adapter_for(runtimes, found.target)
    ref = target_ref(found.target)
    services = list(preview.desired)
    version = found.version
    session.commit()
    # The adapter's fingerprint covers the desired-side inputs too (rendered compose config,
    # live object specs), not only the live state `describe` returns; both from one read.
    live, current = call_runtime("read the live state", lambda: adapter.observe(ref, services))
    _check_drift(found, preview, live, services, current)
    found = load_release(session, found.number)
    # A rollback that starts moves the release it undoes too (core.flows.rollback): both rows
    # are locked first, ascending, as every writer locks release rows (core.releases.locks).
    lock_releases(session, [found.number, *filter(None, [found.rollback_of])])
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
                "queued_at": None,
                "queued_by": None,
            },
        )
        session.commit()
    except IntegrityError:  # another release started applying on the target meanwhile
        session.rollback()
        found = load_release(session, found.number)
        busy = active_release(session, found.target_id)
        if busy is None or busy == release_id(found.number):
            raise Conflict(
                f"{release_id(found.number)} could not start: its target changed hands; "
                "apply it again",
                release_id=release_id(found.number),
            ) from None
        _enqueue(session, found, actor, busy)
        session.commit()
        return view(session, found, actor)
    # The plan travels with the job: the claim was committed with the move to `applying`.
    runner.start(found.number, (preview_plan(ref, preview), found.target.runtime))
    return view(session, found, actor)


def preview_plan(target: TargetRef, preview: Preview) -> Plan:
    """The plan a stored preview describes: what the job applies."""
    return Plan(
        target=target,
        desired={k: ServiceSpec.model_validate(v) for k, v in preview.desired.items()},
        diff={
            s: {f: FieldChange.model_validate(c) for f, c in d.items()}
            for s, d in preview.diff.items()
        },
        base_fingerprint=preview.base_fingerprint,
    )


def _enqueue(session: Session, release: Release, actor: Actor, behind: str) -> None:
    if release.queued_at is not None:
        return  # already waiting: keep its place
    values = {
        "queued_at": utcnow(),
        "queued_by": actor.on_behalf_of or actor.name,
        "version": release.version + 1,
    }
    # Compare-and-set, as for a transition: a release another call just started is not queued.
    result = session.execute(
        update(Release)
        .where(
            Release.number == release.number,
            Release.version == release.version,
            Release.lifecycle_state == State.approved.value,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(release)
        raise illegal_transition(release, "apply", normalize_state(release.lifecycle_state))
    for key, value in values.items():
        set_committed_value(release, key, value)
    position = len(queued_ahead(session, release)) + 1
    record(
        session,
        actor=actor,
        action="queue",
        project=release.project.name,
        release_number=release.number,
        before=release.lifecycle_state,
        after=release.lifecycle_state,
        data={"behind": behind, "position": position},
    )
    queue_event(
        session,
        release_event(
            release,
            "release_update",
            {"action": "queue", "actor": actor.name, "position": position},
        ),
    )


def apply_next(session: Session, *, runner: ApplyRunner, target_id: int) -> str | None:
    """Start the oldest queued release of a free target; returns its id (None: nothing to do).

    Freshness and drift are checked again as for any apply. A release that can no longer apply
    (its diff changed, the target drifted) leaves the queue with the reason, audited, and the
    next one is tried; when the runtime is unreachable the queue waits for the next sweep.
    """
    while True:
        session.rollback()
        if active_release(session, target_id) is not None:
            return None
        head = session.scalars(
            select(Release)
            .where(
                Release.target_id == target_id,
                Release.lifecycle_state == State.approved.value,
                Release.queued_at.is_not(None),
            )
            .order_by(Release.queued_at, Release.number)
            .limit(1)
        ).first()
        if head is None:
            return None
        number = head.number
        on_behalf = Actor(
            SYSTEM.user_id, SYSTEM.name, SYSTEM.grants, SYSTEM.channel, None, head.queued_by
        )
        try:
            read = apply_release(
                session,
                actor=on_behalf,
                runtimes=runner.runtimes,
                runner=runner,
                release=str(number),
            )
        except (RuntimeFailure, Frozen):  # the queue waits for the runtime or the thaw
            session.rollback()
            return None
        except ShipdeckError as exc:
            session.rollback()
            _leave_queue(session, number, exc)
            continue
        if read.lifecycle_state != State.approved.value or read.queue_position is None:
            return read.id
        return None  # it queued again: another release took the target meanwhile


def _leave_queue(session: Session, number: int, exc: ShipdeckError) -> None:
    release = load_release(session, number)
    if release.lifecycle_state == State.applying.value:
        return  # another replica applied it meanwhile
    release.queued_at, release.queued_by = None, None
    record(
        session,
        actor=SYSTEM,
        action="dequeue",
        project=release.project.name,
        release_number=release.number,
        before=release.lifecycle_state,
        after=normalize_state(release.lifecycle_state).value,
        data={"reason": first_line(exc.message), "code": exc.code},
    )
    session.commit()


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


def applies_on_approval(release: Release, runner: ApplyRunner | None) -> bool:
    """Whether approving this release applies it at once (the target's policy, and a runner)."""
    return runner is not None and release.target.apply_on_approval


def apply_if_automatic(
    session: Session, release: Release, *, actor: Actor, runner: ApplyRunner | None
) -> None:
    """Apply at once when the target's policy says to apply on approval."""
    if runner is None or not applies_on_approval(release, runner):
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

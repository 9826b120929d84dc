"""Release use cases: preview, re-preview, submit, apply, cancel, rollback, reads."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.approvals.tickets import current_ticket, open_ticket, set_ticket_state, ticket_read
from core.audit.models import AuditEvent
from core.audit.service import canonical_json, record
from core.db import utcnow
from core.errors import (
    Conflict,
    DriftDetected,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PreviewExpired,
    RuntimeFailure,
)
from core.events import queue_event
from core.ids import parse_release_id, release_id
from core.lifecycle import (
    WAITING,
    State,
    allowed,
    illegal_transition,
    normalize_state,
    release_event,
    transition,
)
from core.permissions import SYSTEM, Action, Actor, require
from core.policy import decide
from core.releases.models import Preview, ProgressEvent, Release
from core.releases.schemas import (
    PreviewRead,
    ReleasePage,
    ReleaseRead,
    RiskSummary,
    Timeline,
    TimelineEntry,
)
from core.targets.models import Project, Target
from core.targets.service import adapter_for, call_runtime, get_target, target_ref, ttl_seconds
from runtimes.base import (
    RISK_RANK,
    FieldChange,
    LiveState,
    Plan,
    ServiceChange,
    ServiceSpec,
)
from runtimes.registry import RuntimeRegistry

if TYPE_CHECKING:
    from core.releases.runner import ApplyRunner

T = TypeVar("T")
MAX_SERVICES = 50


# ---------------------------------------------------------------- reads


def load_release(session: Session, value: str | int, *, for_update: bool = False) -> Release:
    """A release by id (`R-42`), or NotFound."""
    number = parse_release_id(value)
    query = select(Release).where(Release.number == number)
    if for_update:
        query = query.with_for_update(of=Release)
    release = session.scalars(query).first()
    if release is None:
        raise NotFound(f"no release {release_id(number)}", release_id=release_id(number))
    return release


def current_preview(session: Session, number: int) -> Preview | None:
    """The newest preview of a release."""
    return session.scalars(
        select(Preview).where(Preview.release_number == number).order_by(Preview.id.desc()).limit(1)
    ).first()


def latest_previews(session: Session, numbers: list[int]) -> dict[int, Preview]:
    """The newest preview of each release, in one query."""
    newest = (
        select(func.max(Preview.id))
        .where(Preview.release_number.in_(numbers))
        .group_by(Preview.release_number)
    )
    return {
        p.release_number: p for p in session.scalars(select(Preview).where(Preview.id.in_(newest)))
    }


def view(session: Session, release: Release, actor: Actor) -> ReleaseRead:
    """The public view of a release, with preview and approval."""
    preview = current_preview(session, release.number)
    ticket = current_ticket(session, release.number)
    return ReleaseRead(
        id=release_id(release.number),
        project=release.project.name,
        environment=release.target.environment,
        runtime=release.target.runtime,
        simulated=release.target.runtime == "sandbox",
        kind=release.kind,
        changes=dict(release.changes),
        lifecycle_state=normalize_state(release.lifecycle_state).value,
        version=release.version,
        requested_by=release.requested_by.name,
        channel=release.channel,
        emergency=release.emergency,
        rollback_of=release_id(release.rollback_of) if release.rollback_of else None,
        reason=release.reason,
        preview=_preview_read(preview, release) if preview else None,
        approval=ticket_read(session, ticket, release, actor, preview) if ticket else None,
        applied_spec=release.applied_spec,
        created_at=release.created_at,
        updated_at=release.updated_at,
    )


def _preview_read(preview: Preview, release: Release) -> PreviewRead:
    return PreviewRead(
        diff={
            service: {k: FieldChange.model_validate(v) for k, v in fields.items()}
            for service, fields in preview.diff.items()
        },
        desired={k: ServiceSpec.model_validate(v) for k, v in preview.desired.items()},
        diff_hash=preview.diff_hash,
        base_fingerprint=preview.base_fingerprint,
        risk=RiskSummary(
            level=preview.risk_level,
            reasons=list(preview.risk_reasons),
            tier=release.target.risk_tier,
        ),
        created_at=preview.created_at,
        expires_at=preview.expires_at,
        expired=preview.expires_at <= utcnow(),
    )


def get_release(session: Session, *, actor: Actor, release: str) -> ReleaseRead:
    """One release the actor can view."""
    found = load_release(session, release)
    require(actor, Action.view, found.project_id, found.project.name)
    return view(session, found, actor)


def list_releases(
    session: Session,
    *,
    actor: Actor,
    project: str | None = None,
    environment: str | None = None,
    state: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> ReleasePage:
    """Releases the actor can view, newest first, filtered and paginated by cursor."""
    query = select(Release).join(Target, Release.target_id == Target.id)
    if project is not None:
        query = query.where(Release.project_id == _project_id(session, project))
    if environment is not None:
        query = query.where(Target.environment == environment.lower())
    if state is not None:
        try:
            query = query.where(Release.lifecycle_state == normalize_state(state.lower()).value)
        except KeyError:
            raise InvalidInput(
                f"{state!r} is not a lifecycle state", known=[s.value for s in State]
            ) from None
    if before is not None:
        query = query.where(Release.number < parse_release_id(before))
    if not actor.is_admin and actor.role_on(None) is None:
        visible = [p for p in actor.grants if p is not None]
        query = query.where(Release.project_id.in_(visible))
    rows = list(session.scalars(query.order_by(Release.number.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return ReleasePage(
        items=[view(session, r, actor) for r in rows],
        next_before=release_id(rows[-1].number) if more and rows else None,
    )


def _project_id(session: Session, name: str) -> int:
    found = session.scalars(select(Project.id).where(Project.name == name.lower())).first()
    if found is None:
        raise NotFound(f"no project named {name!r}", project=name)
    return found


def active_release(session: Session, target_id: int) -> str | None:
    """The release applying on a target right now, if any."""
    number = session.scalars(
        select(Release.number).where(
            Release.target_id == target_id, Release.lifecycle_state == State.applying.value
        )
    ).first()
    return release_id(number) if number else None


def timeline(session: Session, *, actor: Actor, release: str) -> Timeline:
    """Audit events and runtime progress of one release, in order."""
    found = load_release(session, release)
    require(actor, Action.view, found.project_id, found.project.name)
    entries = [
        TimelineEntry(
            at=e.at,
            kind="audit",
            action=e.action,
            actor=e.actor,
            on_behalf_of=e.on_behalf_of,
            channel=e.channel,
            before_state=e.before_state,
            after_state=e.after_state,
            data=e.data,
        )
        for e in session.scalars(
            select(AuditEvent)
            .where(AuditEvent.release_number == found.number)
            .order_by(AuditEvent.seq)
        )
    ]
    entries += [
        TimelineEntry(at=p.at, kind="progress", service=p.service, level=p.level, message=p.message)
        for p in session.scalars(
            select(ProgressEvent)
            .where(ProgressEvent.release_number == found.number)
            .order_by(ProgressEvent.id)
        )
    ]
    entries.sort(key=lambda entry: entry.at)  # stable: audit order kept among equal times
    return Timeline(
        release_id=release_id(found.number),
        lifecycle_state=normalize_state(found.lifecycle_state).value,
        entries=entries,
    )


# ---------------------------------------------------------------- runtime calls


# ---------------------------------------------------------------- preview


def _validate_changes(target: Target, changes: dict[str, ServiceChange]) -> None:
    known = [s.name for s in target.project.services]
    if not changes:
        raise InvalidInput("a release needs at least one service change", known_services=known)
    if len(changes) > MAX_SERVICES:
        raise InvalidInput(f"at most {MAX_SERVICES} services per release")
    for name, change in changes.items():
        if name not in known:
            raise InvalidInput(
                f"project {target.project.name} has no service {name!r}",
                service=name,
                known_services=known,
            )
        if change.is_empty():
            raise InvalidInput(f"the change for {name} asks for nothing", service=name)
        if change.image is not None and change.image_tag is not None:
            raise InvalidInput(f"give {name} either image or image_tag, not both", service=name)


def _diff_hash(plan: Plan) -> str:
    payload = {
        "desired": {k: v.model_dump() for k, v in plan.desired.items()},
        "diff": {k: {f: c.model_dump() for f, c in d.items()} for k, d in plan.diff.items()},
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def _store_preview(session: Session, release: Release, target: Target, plan: Plan) -> Preview:
    level = max((h.level for h in plan.risk_hints), key=RISK_RANK.__getitem__, default="low")
    now = utcnow()
    preview = Preview(
        release_number=release.number,
        desired={k: v.model_dump() for k, v in plan.desired.items()},
        diff={k: {f: c.model_dump() for f, c in d.items()} for k, d in plan.diff.items()},
        diff_hash=_diff_hash(plan),
        base_fingerprint=plan.base_fingerprint,
        risk_level=level,
        risk_reasons=[h.message for h in plan.risk_hints],
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds(target)),
    )
    session.add(preview)
    session.flush()
    return preview


def _plan(
    session: Session, runtimes: RuntimeRegistry, target: Target, changes: dict[str, ServiceChange]
) -> Plan:
    adapter = adapter_for(runtimes, target)
    ref = target_ref(target)
    session.commit()  # never hold a transaction while a runtime is called
    plan = call_runtime("plan the change", lambda: adapter.plan(ref, changes))
    if not any(plan.diff.values()):
        raise InvalidInput(
            "nothing to change: the target already runs what was asked",
            live={k: v.model_dump() for k, v in plan.desired.items()},
        )
    return plan


def preview_release(
    session: Session,
    *,
    actor: Actor,
    runtimes: RuntimeRegistry,
    project: str,
    environment: str,
    changes: dict[str, ServiceChange],
    emergency: bool = False,
    kind: str = "deploy",
    rollback_of: int | None = None,
) -> ReleaseRead:
    """Create a release and its preview (diff, fingerprint, risk, expiry). Commits."""
    target = get_target(session, project, environment)
    require(actor, Action.request, target.project_id, target.project.name)
    _validate_changes(target, changes)
    plan = _plan(session, runtimes, target, changes)
    target = session.get_one(Target, target.id)
    release = Release(
        project_id=target.project_id,
        target_id=target.id,
        kind=kind,
        changes={k: v.model_dump(exclude_none=True) for k, v in changes.items()},
        services_key=",".join(sorted(changes)),
        lifecycle_state=State.previewed.value,
        version=1,
        requested_by_id=actor.user_id,
        channel=actor.channel.value,
        emergency=emergency,
        rollback_of=rollback_of,
    )
    session.add(release)
    session.flush()
    preview = _store_preview(session, release, target, plan)
    record(
        session,
        actor=actor,
        action="preview",
        project=target.project.name,
        release_number=release.number,
        before=None,
        after=State.previewed.value,
        data={
            "kind": kind,
            "changes": release.changes,
            "diff_hash": preview.diff_hash,
            "risk": preview.risk_level,
            "expires_at": preview.expires_at.isoformat(),
            **({"rollback_of": release_id(rollback_of)} if rollback_of else {}),
        },
    )
    _queue_update(session, release, "preview", actor)
    session.commit()
    return view(session, release, actor)


def repreview_release(
    session: Session, *, actor: Actor, runtimes: RuntimeRegistry, release: str
) -> ReleaseRead:
    """Recompute diff and fingerprint and restart the TTL, keeping the release id. Commits.

    An unchanged diff keeps the approvals (an expired release returns to the state it expired
    from); a changed diff voids them and the release is `previewed` again.
    """
    found = load_release(session, release)
    require(actor, Action.request, found.project_id, found.project.name)
    _require_requester_or_approver(actor, found, "re-preview")
    state = normalize_state(found.lifecycle_state)
    if not allowed(state, "repreview"):
        raise illegal_transition(found, "repreview", state)
    changes = {k: ServiceChange.model_validate(v) for k, v in found.changes.items()}
    target = found.target
    plan = _plan(session, runtimes, target, changes)
    found = load_release(session, found.number)
    old = current_preview(session, found.number)
    state = normalize_state(found.lifecycle_state)
    preview = _store_preview(session, found, found.target, plan)
    unchanged = old is not None and old.diff_hash == preview.diff_hash
    if state == State.expired:
        to = State(found.expired_from) if unchanged and found.expired_from else State.previewed
    elif unchanged:
        to = state
    else:
        to = State.previewed
    if to == State.previewed and state != State.previewed:
        set_ticket_state(
            session, found.number, "void", only_from=("pending", "approved", "expired")
        )
    elif unchanged:
        set_ticket_state(
            session,
            found.number,
            "approved" if to == State.approved else "pending",
            only_from=("expired",),
        )
    transition(
        session,
        found,
        action="repreview",
        to=to,
        actor=actor,
        data={
            "diff_changed": not unchanged,
            "approvals_kept": unchanged and to != State.previewed,
            "diff_hash": preview.diff_hash,
            "expires_at": preview.expires_at.isoformat(),
        },
        values={"expired_from": None},
    )
    session.commit()
    return view(session, found, actor)


# ---------------------------------------------------------------- submit / cancel / expire


def _require_requester_or_approver(actor: Actor, release: Release, what: str) -> None:
    if actor.user_id == release.requested_by_id or actor.can(Action.approve, release.project_id):
        return
    raise PermissionDenied(
        f"only {release.requested_by.name} (the requester) or an approver may {what} "
        f"{release_id(release.number)}"
    )


def check_not_expired(session: Session, release: Release, actor: Actor) -> None:
    """Expire a waiting release whose preview TTL passed (committed), then refuse the action."""
    if normalize_state(release.lifecycle_state) not in WAITING:
        return
    preview = current_preview(session, release.number)
    if preview is None or preview.expires_at > utcnow():
        return
    _expire(session, release, preview_expired_at=preview.expires_at.isoformat())
    session.commit()
    raise PreviewExpired(
        f"the preview of {release_id(release.number)} expired at "
        f"{preview.expires_at.isoformat(timespec='seconds')}; re-preview it to continue",
        release_id=release_id(release.number),
        expired_at=preview.expires_at.isoformat(),
    )


def _expire(session: Session, release: Release, **data: Any) -> None:
    state = normalize_state(release.lifecycle_state)
    set_ticket_state(session, release.number, "expired", only_from=("pending", "approved"))
    transition(
        session,
        release,
        action="expire",
        to=State.expired,
        actor=SYSTEM,
        data=data,
        values={"expired_from": state.value},
    )


def expire_due(session: Session) -> int:
    """Expire every waiting release whose preview TTL passed. Commits; returns the count."""
    now = utcnow()
    numbers = session.scalars(
        select(Release.number)
        .where(Release.lifecycle_state.in_([s.value for s in WAITING]))
        .where(
            ~select(Preview.id)
            .where(Preview.release_number == Release.number, Preview.expires_at > now)
            .exists()
        )
    ).all()
    count = 0
    for number in numbers:
        release = load_release(session, number)
        try:
            _expire(session, release, preview_expired=True)
            session.commit()
            count += 1
        except Conflict:
            session.rollback()
    return count


def submit_release(
    session: Session, *, actor: Actor, runner: ApplyRunner | None, release: str
) -> ReleaseRead:
    """Ask policy: open an approval ticket, or approve at once. Commits.

    Older waiting releases for the same target and services are cancelled as superseded.
    """
    found = load_release(session, release)
    require(actor, Action.request, found.project_id, found.project.name)
    if actor.user_id != found.requested_by_id and not actor.is_admin:
        raise PermissionDenied(
            f"only {found.requested_by.name} (the requester) may submit {release_id(found.number)}"
        )
    state = normalize_state(found.lifecycle_state)
    if not allowed(state, "submit"):
        raise illegal_transition(found, "submit", state)
    check_not_expired(session, found, actor)
    decision = decide(session, target=found.target, emergency=found.emergency)
    _supersede(session, found, actor)
    preview = current_preview(session, found.number)
    risk = preview.risk_level if preview else "low"
    data: dict[str, Any] = {"policy": decision.reason}
    if decision.needs_approval:
        ticket = open_ticket(session, found, decision, risk)
        data["steps"] = ticket.steps
        transition(
            session, found, action="submit", to=State.pending_approval, actor=actor, data=data
        )
        queue_event(
            session,
            release_event(
                found, "approval_requested", {"ticket_id": ticket.id, "group": ticket.current_group}
            ),
        )
    else:
        transition(session, found, action="submit", to=State.approved, actor=actor, data=data)
    session.commit()
    if found.lifecycle_state == State.approved.value:
        apply_if_automatic(session, found, actor=actor, runner=runner)
    return view(session, load_release(session, found.number), actor)


def _supersede(session: Session, newer: Release, actor: Actor) -> None:
    mine = set(newer.services_key.split(","))
    older = session.scalars(
        select(Release).where(
            Release.target_id == newer.target_id,
            Release.number < newer.number,
            Release.lifecycle_state.in_([s.value for s in WAITING]),
        )
    )
    for old in older:
        if mine & set(old.services_key.split(",")):
            reason = f"superseded by {release_id(newer.number)}"
            set_ticket_state(session, old.number, "cancelled", only_from=("pending", "approved"))
            transition(
                session,
                old,
                action="cancel",
                to=State.cancelled,
                actor=actor,
                data={"reason": reason, "superseded_by": release_id(newer.number)},
                values={"reason": reason},
            )


def cancel_release(
    session: Session, *, actor: Actor, release: str, reason: str | None = None
) -> ReleaseRead:
    """Withdraw a release that has not started applying. Commits."""
    found = load_release(session, release)
    require(actor, Action.request, found.project_id, found.project.name)
    _require_requester_or_approver(actor, found, "cancel")
    state = normalize_state(found.lifecycle_state)
    if not allowed(state, "cancel"):
        raise illegal_transition(found, "cancel", state)
    text = reason or f"cancelled by {actor.name}"
    set_ticket_state(session, found.number, "cancelled", only_from=("pending", "approved"))
    transition(
        session,
        found,
        action="cancel",
        to=State.cancelled,
        actor=actor,
        data={"reason": text},
        values={"reason": text},
    )
    session.commit()
    return view(session, found, actor)


# ---------------------------------------------------------------- apply


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
    _require_requester_or_approver(actor, found, "apply")
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
                "lease_expires_at": utcnow() + timedelta(seconds=runner.lease_seconds),
            },
        )
        if found.rollback_of is not None:
            original = load_release(session, found.rollback_of)
            transition(
                session,
                original,
                action="rollback",
                to=State.rolling_back,
                actor=actor,
                data={"rollback_release": release_id(found.number)},
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


# ---------------------------------------------------------------- rollback


def rollback_release(
    session: Session,
    *,
    actor: Actor,
    runtimes: RuntimeRegistry,
    project: str,
    environment: str,
    to_release: str | None = None,
    emergency: bool = False,
) -> ReleaseRead:
    """Preview a rollback: a new release whose desired state is an earlier applied revision.

    Without `to_release` the newest applied (or failed) release is undone back to the live
    state it replaced. The rollback then goes through the same policy as any release. Commits.
    """
    target = get_target(session, project, environment)
    require(actor, Action.request, target.project_id, target.project.name)
    undone = session.scalars(
        select(Release)
        .where(
            Release.target_id == target.id,
            Release.lifecycle_state.in_([State.applied.value, State.failed.value]),
        )
        .order_by(Release.number.desc())
        .limit(1)
    ).first()
    if undone is None:
        raise InvalidInput(
            f"nothing to roll back on {target.project.name}/{target.environment}: "
            "no applied or failed release"
        )
    if to_release is None:
        desired = undone.base_spec or {}
    else:
        base = load_release(session, to_release)
        if base.target_id != target.id or not base.applied_spec:
            raise InvalidInput(
                f"{release_id(base.number)} was never applied on "
                f"{target.project.name}/{target.environment}",
                release_id=release_id(base.number),
            )
        desired = base.applied_spec
    services = [s for s in desired if s in set(undone.services_key.split(","))] or list(desired)
    changes = {
        s: ServiceChange(
            image=desired[s].get("image"),
            replicas=desired[s].get("replicas"),
            env=desired[s].get("env"),
        )
        for s in services
    }
    return preview_release(
        session,
        actor=actor,
        runtimes=runtimes,
        project=target.project.name,
        environment=target.environment,
        changes=changes,
        emergency=emergency,
        kind="rollback",
        rollback_of=undone.number,
    )


# ---------------------------------------------------------------- helpers


def _queue_update(session: Session, release: Release, action: str, actor: Actor) -> None:
    queue_event(
        session, release_event(release, "release_update", {"action": action, "actor": actor.name})
    )

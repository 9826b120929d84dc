"""Preview and re-preview: the diff, fingerprint, risk and expiry of a release."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from core.audit.service import canonical_json, record
from core.db import utcnow
from core.errors import InvalidInput, PreviewChanged
from core.events import queue_event
from core.flows.views import committed_view, view
from core.identity.service import person
from core.ids import release_id
from core.permissions import Action, Actor, require
from core.releases.lifecycle import (
    State,
    allowed,
    illegal_transition,
    normalize_state,
    release_event,
    transition,
)
from core.releases.models import Preview, Release
from core.releases.queries import current_preview, load_release, require_requester_or_approver
from core.releases.schemas import ReleaseRead
from core.targets.models import Target
from core.targets.service import (
    adapter_for,
    call_runtime,
    get_target,
    target_ref,
    ttl_seconds,
    unknown_service,
)
from runtimes.base import (
    RISK_RANK,
    Plan,
    ServiceChange,
)
from runtimes.registry import RuntimeRegistry

if TYPE_CHECKING:
    pass


MAX_SERVICES = 50


def _validate_changes(target: Target, changes: dict[str, ServiceChange]) -> None:
    known = [s.name for s in target.project.services]
    if not changes:
        raise InvalidInput("a release needs at least one service change", known_services=known)
    if len(changes) > MAX_SERVICES:
        raise InvalidInput(f"at most {MAX_SERVICES} services per release")
    for name, change in changes.items():
        if name not in known:
            raise unknown_service(target.project.name, name, known)
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
    # The target's tier counts: a change to a high-risk target is never "low".
    levels = [h.level for h in plan.risk_hints] + [target.risk_tier]
    level = max(levels, key=RISK_RANK.__getitem__)
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
    retry_of: int | None = None,
) -> ReleaseRead:
    """Create a release and its preview (diff, fingerprint, risk, expiry). Commits."""
    target = get_target(session, project, environment, services=True)
    require(actor, Action.request, target.project_id, target.project.name)
    if emergency and kind != "rollback":  # an emergency may lighten a rollback, never a deploy
        raise InvalidInput("emergency applies only to rollbacks; a deploy follows the policy")
    _validate_changes(target, changes)
    plan = _plan(session, runtimes, target, changes)
    target = session.get_one(Target, target.id)
    release = Release(
        project=target.project,
        target=target,
        kind=kind,
        changes={k: v.model_dump(exclude_none=True) for k, v in changes.items()},
        services_key=",".join(sorted(changes)),
        lifecycle_state=State.previewed.value,
        version=1,
        requested_by=person(session, actor),  # the answer names them
        channel=actor.channel.value,
        emergency=emergency,
        rollback_of=rollback_of,
        retry_of=retry_of,
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
            **({"retry_of": release_id(retry_of)} if retry_of else {}),
            **({"emergency": True, "declared_by": actor.name} if emergency else {}),
        },
    )
    _queue_update(session, release, "preview", actor)
    return committed_view(session, release, actor, preview, None)


def repreview_release(
    session: Session, *, actor: Actor, runtimes: RuntimeRegistry, release: str
) -> ReleaseRead:
    """Recompute diff and fingerprint and restart the TTL, keeping the release id. Commits.

    An unchanged diff keeps the approvals (an expired release returns to the state it expired
    from); a changed diff voids them and the release is `previewed` again.
    """
    found = load_release(session, release)
    require(actor, Action.request, found.project_id, found.project.name)
    require_requester_or_approver(actor, found, "re-preview")
    state = normalize_state(found.lifecycle_state)
    if not allowed(state, "repreview"):
        raise illegal_transition(found, "repreview", state)
    _recompute(session, runtimes, found, actor)
    session.commit()
    return view(session, load_release(session, found.number), actor)


def _recompute(
    session: Session, runtimes: RuntimeRegistry, release: Release, actor: Actor
) -> tuple[Release, bool]:
    """Re-plan a release and store the new preview; returns it and whether the diff held.

    Does not commit. An unchanged diff keeps the decisions; a changed one voids them.
    """
    number = release.number
    changes = {k: ServiceChange.model_validate(v) for k, v in release.changes.items()}
    plan = _plan(session, runtimes, release.target, changes)
    found = load_release(session, number)
    state = normalize_state(found.lifecycle_state)
    if not allowed(state, "repreview"):
        raise illegal_transition(found, "repreview", state)
    old = current_preview(session, found.number)
    preview = _store_preview(session, found, found.target, plan)
    unchanged = old is not None and old.diff_hash == preview.diff_hash
    if state == State.expired:
        to = State(found.expired_from) if unchanged and found.expired_from else State.previewed
    elif unchanged:
        to = state
    else:
        to = State.previewed
    # the ticket follows (voided or restored) through core.approvals.hooks
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
        values={"expired_from": None, "queued_at": None, "queued_by": None}
        if not unchanged
        else {"expired_from": None},
    )
    return found, unchanged


def stale(preview: Preview | None) -> bool:
    """Whether this newest preview's TTL passed (or there is none)."""
    return preview is None or preview.expires_at <= utcnow()


def is_stale(session: Session, release: Release) -> bool:
    """Whether the release's preview TTL passed (or it has none)."""
    return stale(current_preview(session, release.number))


def ensure_fresh(
    session: Session, *, actor: Actor, runtimes: RuntimeRegistry, release: Release
) -> Release:
    """Re-preview a release whose preview is stale, inside the caller's call. Commits if so.

    Unchanged diff hash: a new preview restarts the TTL, decisions are kept and the caller goes
    on. Changed: decisions are void, the release is `previewed` again, and `PreviewChanged`
    shows the new diff. Nothing ever applies on a stale preview.
    """
    if not is_stale(session, release):
        return release
    found, unchanged = _recompute(session, runtimes, release, actor)
    session.commit()
    if unchanged:
        return load_release(session, found.number)
    preview = current_preview(session, found.number)
    assert preview is not None  # _recompute just stored one
    raise PreviewChanged(
        f"the preview of {release_id(found.number)} was stale and the diff changed since it was "
        "previewed: its approvals are void; review the new diff and submit it again",
        release_id=release_id(found.number),
        lifecycle_state=normalize_state(found.lifecycle_state).value,
        diff=preview.diff,
        diff_hash=preview.diff_hash,
        risk=preview.risk_level,
    )


def _queue_update(session: Session, release: Release, action: str, actor: Actor) -> None:
    queue_event(
        session, release_event(release, "release_update", {"action": action, "actor": actor.name})
    )

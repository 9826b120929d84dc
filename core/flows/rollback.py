"""Rollback: a new release whose desired state is an earlier applied revision."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.approvals.tickets import is_eligible
from core.errors import InvalidInput, PermissionDenied
from core.flows.preview import preview_release
from core.ids import release_id
from core.permissions import Action, Actor, require
from core.policy import emergency_groups
from core.releases.lifecycle import State, Step, after, transition
from core.releases.models import Release
from core.releases.queries import current_preview, load_release
from core.releases.schemas import ReleaseRead
from core.targets.models import Target
from core.targets.service import get_target, unknown_service
from runtimes.base import ServiceChange
from runtimes.registry import RuntimeRegistry

APPLIED = (State.applied.value, State.rolled_back.value, State.rollback_failed.value)
ENDED = (*APPLIED, State.failed.value)
Spec = dict[str, Any]


def rollback_release(
    session: Session,
    *,
    actor: Actor,
    runtimes: RuntimeRegistry,
    project: str,
    environment: str,
    services: list[str] | None = None,
    to_release: str | None = None,
    emergency: bool = False,
) -> ReleaseRead:
    """Preview a rollback: a new release whose desired state is an earlier applied revision.

    Each service asked for (default: every service of the newest applied or failed release)
    goes back to its last applied revision before the current one, never to an image that
    only ever failed; variables added since are removed. `to_release` restores the target's
    whole applied state as of that release. The rollback then goes through the same policy
    as any release; `emergency` needs an entitled declarer. Commits.
    """
    target = get_target(session, project, environment, services=True)
    require(actor, Action.request, target.project_id, target.project.name)
    if emergency:
        _require_emergency_declarer(session, actor, target)
    history = list(
        session.scalars(
            select(Release)
            .where(Release.target_id == target.id, Release.lifecycle_state.in_(ENDED))
            .order_by(Release.number.desc())
        )
    )
    where = f"{target.project.name}/{target.environment}"
    if not history:
        raise InvalidInput(f"nothing to roll back on {where}: no applied or failed release")
    known = {s.name for s in target.project.services}
    for name in services or []:
        if name not in known:
            raise unknown_service(target.project.name, name, known)
    if to_release is not None:
        base = load_release(session, to_release)
        if base.target_id != target.id or base.lifecycle_state not in APPLIED:
            raise InvalidInput(
                f"{release_id(base.number)} was never applied on {where}",
                release_id=release_id(base.number),
            )
        desired = _state_as_of(session, history, base.number)
        desired = {s: v for s, v in desired.items() if not services or s in services}
        undone = history[0]
    else:
        names = services or _services_of(history[0])
        desired = {}
        for name in names:
            found = _previous_revision(session, history, name)
            if found is None:
                raise InvalidInput(
                    f"{name} on {where} has no earlier applied revision to go back to",
                    service=name,
                )
            desired[name] = found
        undone = next(r for r in history if set(names) & set(_services_of(r)))
    current = _state_as_of(session, history, history[0].number)
    changes = {name: _change_to(spec, current.get(name)) for name, spec in desired.items()}
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


def _services_of(release: Release) -> list[str]:
    return [s for s in release.services_key.split(",") if s]


@dataclass(frozen=True)
class Revision:
    """One state a service ran: `ok` when it was applied and healthy, not a failed attempt."""

    at: float  # the release that produced it; the initial state sits just before the first
    spec: Spec
    ok: bool


def _revisions(session: Session, history: list[Release], service: str) -> list[Revision]:
    """The states `service` went through on a target, oldest first."""
    revisions: list[Revision] = []
    for release in sorted(history, key=lambda r: r.number):
        if service not in _services_of(release):
            continue
        initial = (release.base_spec or {}).get(service)
        if not revisions and initial is not None:
            revisions.append(Revision(release.number - 0.5, initial, True))
        applied = (release.applied_spec or {}).get(service)
        if applied is not None:
            revisions.append(Revision(release.number, applied, True))
        else:  # failed: what it tried to roll out is what runs (or half-runs) now
            preview = current_preview(session, release.number)
            tried = (preview.desired if preview else {}).get(service)
            if tried is not None:
                revisions.append(Revision(release.number, tried, False))
    return revisions


def _previous_revision(session: Session, history: list[Release], service: str) -> Spec | None:
    """The newest healthy revision of `service` that differs from what runs now."""
    revisions = _revisions(session, history, service)
    if not revisions:
        return None
    current = revisions[-1].spec
    for revision in reversed(revisions[:-1]):
        if revision.ok and revision.spec != current:
            return revision.spec
    return None


def _state_as_of(session: Session, history: list[Release], number: float) -> dict[str, Spec]:
    """Every service's spec on the target right after release `number`."""
    names = sorted({name for release in history for name in _services_of(release)})
    state: dict[str, Spec] = {}
    for name in names:
        revisions = _revisions(session, history, name)
        before = [r for r in revisions if r.at <= number]
        if before:
            state[name] = before[-1].spec
        elif revisions and revisions[0].ok:  # first touched later: it still ran its initial state
            state[name] = revisions[0].spec
    return state


def _change_to(spec: Spec, current: Spec | None) -> ServiceChange:
    env = dict(spec.get("env") or {})
    added = sorted(set((current or {}).get("env") or {}) - set(env))
    return ServiceChange(
        image=spec.get("image"),
        replicas=spec.get("replicas"),
        env=env or None,
        unset_env=added or None,
    )


def _require_emergency_declarer(session: Session, actor: Actor, target: Target) -> None:
    """Only admins and members of a group the emergency policy names may declare one."""
    groups = emergency_groups(session, target)
    where = f"{target.project.name}/{target.environment}"
    if groups is None:
        raise InvalidInput(f"no emergency policy is declared for {where}")
    if actor.is_admin:
        return
    if actor.user_id is not None and any(
        is_eligible(session, actor.user_id, target.project_id, group) for group in groups
    ):
        return
    raise PermissionDenied(
        f"{actor.name} may not declare an emergency on {where}; the emergency policy names: "
        + ", ".join(groups),
        groups=groups,
    )


@after(sources={State.approved}, targets={State.applying})
def rollback_started(step: Step) -> None:
    """A rollback that starts applying puts the release it undoes in rolling_back."""
    if step.release.rollback_of is None:
        return
    original = load_release(step.session, step.release.rollback_of)
    transition(
        step.session,
        original,
        action="rollback",
        to=State.rolling_back,
        actor=step.actor,
        data={"rollback_release": release_id(step.release.number)},
    )


@after(sources={State.applying}, targets={State.applied, State.failed})
def rollback_ended(step: Step) -> None:
    """A rollback that ended (applied, failed or abandoned) ends the release it undid."""
    end_rollback_original(step.session, step.release, ok=step.to == State.applied, actor=step.actor)


def end_rollback_original(session: Session, release: Release, *, ok: bool, actor: Actor) -> None:
    """A rollback release that ended moves the release it undid to rolled_back / failed."""
    if release.rollback_of is None:
        return
    original = load_release(session, release.rollback_of)
    if original.lifecycle_state != State.rolling_back.value:
        return
    transition(
        session,
        original,
        action="rolled_back" if ok else "rollback_fail",
        to=State.rolled_back if ok else State.rollback_failed,
        actor=actor,
        data={"rollback_release": release_id(release.number)},
    )

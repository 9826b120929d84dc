"""Change windows and freezes: checked in core at submit and apply.

A frozen target (an ad-hoc freeze by an admin or SRE, or a declared deny window, or outside
every declared allow window) refuses submit and apply with the reason and who froze it. Only
an emergency rollback passes, under the emergency policy it was previewed with; that pass is
audited.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.service import record
from core.db import utcnow
from core.errors import Frozen, InvalidInput, NotFound, PermissionDenied
from core.identity.service import member_of
from core.ids import release_id
from core.permissions import Action, Actor, require
from core.releases.models import Release
from core.releases.queries import project_id_named
from core.targets.models import Freeze, Project
from core.targets.schemas import FreezeRead
from core.targets.service import freeze_reasons, get_target

FREEZER_GROUP = "sre"
MAX_FREEZE = timedelta(days=90)


def check_not_frozen(session: Session, release: Release, actor: Actor, action: str) -> list[str]:
    """Refuse `action` on a frozen target; an emergency rollback passes, audited. What holds
    the target (empty: it is not frozen)."""
    reasons = freeze_reasons(session, release.target)
    if not reasons:
        return reasons
    if release.emergency and release.kind == "rollback":
        record(
            session,
            actor=actor,
            action="freeze_passed",
            project=release.project.name,
            release_number=release.number,
            data={"action": action, "reasons": reasons, "emergency": True},
        )
        return reasons
    raise Frozen(
        f"{release_id(release.number)} cannot {action}: " + "; ".join(reasons),
        release_id=release_id(release.number),
        reasons=reasons,
    )


def _require_freezer(session: Session, actor: Actor, project: Project) -> None:
    if not actor.is_admin and not member_of(session, actor, FREEZER_GROUP, project.id):
        raise PermissionDenied(
            f"only an admin or a member of {FREEZER_GROUP} may freeze or unfreeze {project.name}"
        )


def _read(freeze: Freeze, project: str, now: datetime) -> FreezeRead:
    return FreezeRead(
        id=freeze.id,
        project=project,
        environment=freeze.environment,
        reason=freeze.reason,
        until=freeze.until,
        created_by=freeze.created_by,
        created_at=freeze.created_at,
        lifted_by=freeze.lifted_by,
        lifted_at=freeze.lifted_at,
        active=freeze.lifted_at is None and freeze.until > now,
    )


def freeze_changes(
    session: Session,
    *,
    actor: Actor,
    project: str,
    environment: str | None,
    until: datetime,
    reason: str,
) -> FreezeRead:
    """Freeze a project's target (or all its targets) until a time, with a reason. Commits."""
    pid = project_id_named(session, project)
    found = session.get_one(Project, pid)
    require(actor, Action.view, pid, found.name)
    _require_freezer(session, actor, found)
    env = get_target(session, found.name, environment).environment if environment else None
    text = reason.strip()
    if not text or len(text) > 500:
        raise InvalidInput("a freeze needs a reason of 1 to 500 characters")
    if until.tzinfo is None:
        raise InvalidInput("until needs a time zone (e.g. 2026-12-01T09:00:00+01:00)")
    now = utcnow()
    if until <= now or until - now > MAX_FREEZE:
        raise InvalidInput("until must be in the future and at most 90 days away")
    freeze = Freeze(
        project_id=pid, environment=env, reason=text, until=until, created_by=actor.name
    )
    session.add(freeze)
    session.flush()
    record(
        session,
        actor=actor,
        action="freeze",
        project=found.name,
        data={
            "freeze_id": freeze.id,
            "environment": env,
            "until": until.isoformat(),
            "reason": text,
        },
    )
    session.commit()
    return _read(freeze, found.name, now)


def lift_freeze(session: Session, *, actor: Actor, freeze_id: int) -> FreezeRead:
    """End a freeze before its time. Commits."""
    freeze = session.get(Freeze, freeze_id)
    project = session.get(Project, freeze.project_id) if freeze is not None else None
    if freeze is None or project is None or not actor.can(Action.view, project.id):
        raise NotFound(f"no freeze #{freeze_id}", freeze_id=freeze_id)
    _require_freezer(session, actor, project)
    now = utcnow()
    if freeze.lifted_at is None and freeze.until > now:
        freeze.lifted_at, freeze.lifted_by = now, actor.name
        record(
            session,
            actor=actor,
            action="lift_freeze",
            project=project.name,
            data={"freeze_id": freeze.id, "environment": freeze.environment},
        )
        session.commit()
    return _read(freeze, project.name, now)


def list_freezes(
    session: Session, *, actor: Actor, project: str | None = None, active: bool = True
) -> list[FreezeRead]:
    """Freezes the actor can see, newest first (only those in force when `active`)."""
    now = utcnow()
    query = select(Freeze, Project.name).join(Project, Project.id == Freeze.project_id)
    if project is not None:
        query = query.where(Freeze.project_id == project_id_named(session, project))
    if active:
        query = query.where(Freeze.lifted_at.is_(None), Freeze.until > now)
    rows = session.execute(query.order_by(Freeze.id.desc()).limit(200)).all()
    return [_read(f, name, now) for f, name in rows if actor.can(Action.view, f.project_id)]


def lift_freezes(
    session: Session, *, actor: Actor, project: str, environment: str | None
) -> list[FreezeRead]:
    """End the freezes in force on one environment of a project (or its project-wide ones).

    "unfreeze prod" lifts the freezes declared for prod; a project-wide freeze (no
    environment) is lifted only when no environment is named, since it also holds the others.
    Commits; lifting nothing is no error (the answer is empty).
    """
    pid = project_id_named(session, project)
    found = session.get_one(Project, pid)
    require(actor, Action.view, pid, found.name)
    _require_freezer(session, actor, found)
    env = get_target(session, found.name, environment).environment if environment else None
    now = utcnow()
    query = select(Freeze).where(
        Freeze.project_id == pid, Freeze.lifted_at.is_(None), Freeze.until > now
    )
    query = query.where(
        Freeze.environment == env if env is not None else Freeze.environment.is_(None)
    )
    lifted = list(session.scalars(query.order_by(Freeze.id)))
    for freeze in lifted:
        freeze.lifted_at, freeze.lifted_by = now, actor.name
        record(
            session,
            actor=actor,
            action="lift_freeze",
            project=found.name,
            data={"freeze_id": freeze.id, "environment": freeze.environment},
        )
    session.commit()
    return [_read(f, found.name, now) for f in lifted]


def require_freezer(session: Session, actor: Actor, project: str) -> None:
    """PermissionDenied unless the actor may freeze and unfreeze `project` (admins, sre)."""
    pid = project_id_named(session, project)
    found = session.get_one(Project, pid)
    require(actor, Action.view, pid, found.name)
    _require_freezer(session, actor, found)


def require_freezer_of(session: Session, actor: Actor, freeze_id: int) -> None:
    """NotFound for a freeze the actor cannot see; PermissionDenied unless they may lift it."""
    freeze = session.get(Freeze, freeze_id)
    project = session.get(Project, freeze.project_id) if freeze is not None else None
    if freeze is None or project is None or not actor.can(Action.view, project.id):
        raise NotFound(f"no freeze #{freeze_id}", freeze_id=freeze_id)
    _require_freezer(session, actor, project)

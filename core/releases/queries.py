"""Release lookups shared by every flow: by id, newest preview, applying release."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.orm import Session

from core.errors import (
    NotFound,
    PermissionDenied,
)
from core.ids import parse_release_id, release_id
from core.permissions import Action, Actor
from core.releases.lifecycle import State
from core.releases.models import Preview, Release
from core.releases.rows import ReleaseRow
from core.targets.models import Project

if TYPE_CHECKING:
    pass


# Built once: every flow reads a release's newest preview (building and cache-keying a
# statement cost about as much CPU as running it; see "Read path" in README).
_NEWEST_PREVIEW = (
    select(Preview)
    .where(Preview.release_number == bindparam("number"))
    .order_by(Preview.id.desc())
    .limit(1)
)


def missing_release(number: int) -> NotFound:
    """What a missing release is answered, and one the caller cannot view too: no door may
    tell a hidden release from a nonexistent one."""
    return NotFound(f"no release {release_id(number)}", release_id=release_id(number))


def load_release(session: Session, value: str | int) -> Release:
    """A release by id (`R-42`), or NotFound.

    One the session already holds is used as it holds it, as a query would return it (a
    mutating tool's visibility check loaded it a moment ago). Writers lock the rows they
    move with `lock_releases`, which reads them again."""
    number = parse_release_id(value)
    release = session.get(Release, number)
    if release is None:
        raise missing_release(number)
    return release


def current_preview(session: Session, number: int) -> Preview | None:
    """The newest preview of a release."""
    return session.scalars(_NEWEST_PREVIEW, {"number": number}).first()


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


def project_id_named(session: Session, name: str) -> int:
    found = session.scalars(select(Project.id).where(Project.name == name.lower())).first()
    if found is None:
        raise NotFound(f"no project named {name!r}", project=name)
    return found


# built once: every status question runs it
_APPLYING = select(Release.number).where(
    Release.target_id == bindparam("target_id"),
    Release.lifecycle_state == State.applying.value,
)


def active_release(session: Session, target_id: int) -> str | None:
    """The release applying on a target right now, if any."""
    number = session.scalars(_APPLYING, {"target_id": target_id}).first()
    return release_id(number) if number else None


def queued_ahead(session: Session, release: Release | ReleaseRow) -> list[str]:
    """Ids of the releases waiting before this one in its target's apply queue."""
    query = select(Release.number).where(
        Release.target_id == release.target_id,
        Release.lifecycle_state == State.approved.value,
        Release.queued_at.is_not(None),
        Release.number != release.number,
    )
    if release.queued_at is not None:
        query = query.where(
            or_(
                Release.queued_at < release.queued_at,
                and_(Release.queued_at == release.queued_at, Release.number < release.number),
            )
        )
    return [release_id(n) for n in session.scalars(query.order_by(Release.queued_at))]


def require_requester_or_approver(actor: Actor, release: Release, what: str) -> None:
    if actor.user_id == release.requested_by_id or actor.can(Action.approve, release.project_id):
        return
    raise PermissionDenied(
        f"only {release.requested_by.name} (the requester) or an approver may {what} "
        f"{release_id(release.number)}"
    )

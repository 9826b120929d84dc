"""Preview expiry: the TTL guards apply; expired releases can be re-previewed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import utcnow
from core.errors import (
    Conflict,
    PreviewExpired,
)
from core.ids import release_id
from core.permissions import SYSTEM, Actor
from core.releases.lifecycle import (
    WAITING,
    State,
    normalize_state,
    transition,
)
from core.releases.models import Preview, Release
from core.releases.queries import current_preview, load_release

if TYPE_CHECKING:
    pass


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

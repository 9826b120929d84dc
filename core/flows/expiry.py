"""Preview expiry: the TTL guards apply; expired releases can be re-previewed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Select, select
from sqlalchemy.orm import Session

from core.approvals.tickets import set_ticket_state
from core.db import read_engine, utcnow
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


def _due(now: datetime, since: datetime | None) -> Select[int]:
    """Waiting releases with no live preview; with `since`, only previews that ran out after it."""
    live = (
        select(Preview.id)
        .where(Preview.release_number == Release.number, Preview.expires_at > now)
        .exists()
    )
    query = select(Release.number).where(Release.lifecycle_state.in_([s.value for s in WAITING]))
    if since is not None:
        # Driven by ix_previews_expires_at: the previews that ran out in the window, not every
        # waiting release.
        ran_out = select(Preview.release_number).where(
            Preview.expires_at > since, Preview.expires_at <= now
        )
        query = query.where(Release.number.in_(ran_out))
    return query.where(~live).order_by(Release.number)


def expire_due(session: Session, since: datetime | None = None) -> int:
    """Expire waiting releases whose preview TTL passed (all, or those that ran out after
    `since`). One short write transaction per release; returns the count."""
    now = utcnow()
    # The scan only reads: on SQLite it must not hold the write lock while it runs.
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with Session(read_engine(engine)) as reader:
        numbers = reader.scalars(_due(now, since)).all()
    count = 0
    for number in numbers:
        release = load_release(session, number)
        preview = current_preview(session, number)
        # Re-checked in the write transaction: a re-preview may have landed since the scan.
        if normalize_state(release.lifecycle_state) not in WAITING or (
            preview is not None and preview.expires_at > now
        ):
            session.rollback()
            continue
        try:
            _expire(session, release, preview_expired=True)
            session.commit()
            count += 1
        except Conflict:
            session.rollback()
    return count


class ExpirySweep:
    """The sweeper's expiry passes: only previews that ran out since the last pass, with a full
    pass first and every `full_every` passes (rows changed by hand, clocks that disagree)."""

    def __init__(self, full_every: int = 60, overlap: timedelta = timedelta(minutes=1)) -> None:
        self.full_every = full_every
        self.overlap = overlap  # replicas' clocks stamp expires_at: tolerate some skew
        self._passes = 0
        self._last: datetime | None = None

    def run(self, session: Session) -> int:
        """One pass; returns how many releases it expired."""
        started = utcnow()
        full = self._last is None or self._passes % self.full_every == 0
        since = None if full or self._last is None else self._last - self.overlap
        count = expire_due(session, since)
        self._passes += 1
        self._last = started
        return count

"""Expiry: the preview TTL guards apply (not waiting); a forgotten ticket times out."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Select, select
from sqlalchemy.orm import Session

from core.approvals.models import ApprovalTicket
from core.approvals.tickets import OPEN, approval_timeout_seconds
from core.db import read_engine, utcnow
from core.errors import Conflict, PreviewExpired
from core.ids import release_id
from core.permissions import SYSTEM, Actor
from core.releases.lifecycle import State, normalize_state, transition
from core.releases.models import Preview, Release
from core.releases.queries import current_preview, load_release
from core.targets.models import Target

# A pending ticket waits for people, not for the preview TTL: re-preview happens at decision.
TTL_BOUND = (State.previewed, State.approved)
APPROVAL_TIMED_OUT = "approval timed out"


def check_not_expired(session: Session, release: Release, actor: Actor) -> None:
    """Expire a previewed/approved release whose preview TTL passed (committed), then refuse."""
    if normalize_state(release.lifecycle_state) not in TTL_BOUND:
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


def _expire(session: Session, release: Release, *, reason: str | None = None, **data: Any) -> None:
    state = normalize_state(release.lifecycle_state)
    values: dict[str, Any] = {"expired_from": state.value}
    if reason is not None:
        # A timed-out ticket is over: re-preview starts again from `previewed`.
        values = {"expired_from": None, "reason": reason}
        data = {"reason": reason, **data}
    transition(
        session, release, action="expire", to=State.expired, actor=SYSTEM, data=data, values=values
    )


def _try_expire(session: Session, number: int, **how: Any) -> int:
    release = load_release(session, number)
    try:
        _expire(session, release, **how)
        session.commit()
        return 1
    except Conflict:
        session.rollback()
        return 0


def _due(now: datetime, since: datetime | None) -> Select[int]:
    """Previewed/approved releases with no live preview, not queued; with `since`, only those
    whose preview ran out after it (driven by ix_previews_expires_at, not every waiting row)."""
    live = (
        select(Preview.id)
        .where(Preview.release_number == Release.number, Preview.expires_at > now)
        .exists()
    )
    query = (
        select(Release.number)
        .where(Release.lifecycle_state.in_([s.value for s in TTL_BOUND]))
        .where(Release.queued_at.is_(None))
    )
    if since is not None:
        ran_out = select(Preview.release_number).where(
            Preview.expires_at > since, Preview.expires_at <= now
        )
        query = query.where(Release.number.in_(ran_out))
    return query.where(~live).order_by(Release.number)


def expire_due(session: Session, since: datetime | None = None) -> int:
    """Expire stale previewed/approved releases and timed-out tickets; returns the count.

    The scans only read (on SQLite they never hold the write lock); each expiry is its own
    short write transaction, re-checked inside it. A release waiting in its target's apply
    queue is not expired: the runner re-previews it when its turn comes.
    """
    now = utcnow()
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    with Session(read_engine(engine)) as reader:
        stale = reader.scalars(_due(now, since)).all()
        timed_out = _timed_out(reader, now)
    count = 0
    for number in stale:
        release = load_release(session, number)
        preview = current_preview(session, number)
        # Re-checked in the write transaction: a re-preview may have landed since the scan.
        if normalize_state(release.lifecycle_state) not in TTL_BOUND or (
            preview is not None and preview.expires_at > now
        ):
            session.rollback()
            continue
        count += _try_expire(session, number, preview_expired=True)
    for number in timed_out:
        count += _try_expire(session, number, reason=APPROVAL_TIMED_OUT)
    return count


def _timed_out(reader: Session, now: datetime) -> list[int]:
    """Releases whose open ticket waited past its target's timeout.

    Only tickets older than the shortest timeout are read (a pass every few seconds must not
    load every open ticket: 20,000 of them cost ~0.5 s on PostgreSQL, each pass).
    """
    timeouts = {t.id: approval_timeout_seconds(t) for t in reader.scalars(select(Target))}
    if not timeouts:
        return []
    oldest = now - timedelta(seconds=min(timeouts.values()))
    rows = reader.execute(
        select(Release.number, ApprovalTicket.created_at, Release.target_id)
        .join(ApprovalTicket, ApprovalTicket.release_number == Release.number)
        .where(
            Release.lifecycle_state == State.pending_approval.value,
            ApprovalTicket.state == OPEN,
            ApprovalTicket.created_at <= oldest,
        )
    )
    return [
        number
        for number, created, target in rows
        if created + timedelta(seconds=timeouts[target]) <= now
    ]


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

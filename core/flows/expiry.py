"""Expiry: the preview TTL guards apply (not waiting); a forgotten ticket times out."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, Select, select
from sqlalchemy.orm import Session

from core.approvals.models import ApprovalTicket
from core.approvals.tickets import OPEN, approval_timeout_seconds, current_ticket, ticket_deadline
from core.db import read_engine, retrying, utcnow
from core.errors import Conflict, PreviewExpired
from core.ids import release_id
from core.permissions import SYSTEM, Actor
from core.releases.lifecycle import State, normalize_state, transition
from core.releases.locks import lock_releases
from core.releases.models import Preview, Release
from core.releases.queries import current_preview
from core.targets.models import Target

log = logging.getLogger(__name__)

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


def _try_expire(session: Session, number: int, now: datetime, *, timeout: bool) -> int:
    """Expire one release in its own transaction if it is still due; 1 if it did.

    The scan read without locks, and a person may have acted since (approved, rejected,
    re-previewed). The release row, then its ticket, are locked in the one lock order
    (core.releases.locks) and the reason to expire is checked again under those locks: a
    decision that committed first wins, and the sweeper says in the log that it stood back.
    A deadlock or serialization failure on PostgreSQL runs the check once more.
    """
    rid = release_id(number)

    def attempt() -> int:
        found = lock_releases(session, [number])
        if not found:
            session.rollback()
            return 0
        release = found[0]
        why = _timeout_gone(session, release, now) if timeout else _ttl_gone(session, release, now)
        if why is not None:
            session.rollback()
            log.info("%s: not expired by the sweeper: %s", rid, why)
            return 0
        try:
            if timeout:
                _expire(session, release, reason=APPROVAL_TIMED_OUT)
            else:
                _expire(session, release, preview_expired=True)
            session.commit()
        except Conflict as exc:
            session.rollback()
            log.info("%s: not expired by the sweeper: %s", rid, exc.message)
            return 0
        return 1

    return retrying(attempt, what=f"expiring {rid}", before_retry=session.rollback)


def _ttl_gone(session: Session, release: Release, now: datetime) -> str | None:
    """Why a release the scan found with a stale preview is no longer due (None: still due)."""
    state = normalize_state(release.lifecycle_state)
    if state not in TTL_BOUND:
        return f"it is {state.value} now"
    if release.queued_at is not None:
        return "it waits in its target's apply queue"
    preview = current_preview(session, release.number)
    if preview is not None and preview.expires_at > now:
        return "it was re-previewed"
    return None


def _timeout_gone(session: Session, release: Release, now: datetime) -> str | None:
    """Why a release the scan found with a timed-out ticket is no longer due (None: still due)."""
    state = normalize_state(release.lifecycle_state)
    if state != State.pending_approval:
        return f"it is {state.value} now (decided before the sweeper acted)"
    ticket = current_ticket(session, release.number, for_update=True)
    if ticket is None or ticket.state != OPEN:
        return f"its ticket is {ticket.state if ticket else 'gone'} now"
    if ticket_deadline(ticket, release.target) > now:
        return "its ticket is not overdue any more (its timeout changed)"
    return None


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
    due = [(n, False) for n in stale] + [(n, True) for n in timed_out]
    for number, timeout in due:
        try:
            count += _try_expire(session, number, now, timeout=timeout)
        except Exception:  # one release that cannot expire must not hold back the others
            session.rollback()
            log.exception("%s: the sweeper could not expire it; next pass", release_id(number))
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

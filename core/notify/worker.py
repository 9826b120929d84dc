"""Deliveries driven from the audit stream: fan out once, claim, send, retry with backoff.

Fan-out moves a cursor (`audit_sinks` row `notify`) under its row lock and inserts one
`notify_deliveries` row per (route, event), unique in the database, so each event reaches each
route once however many replicas run. Audit events are appended under the chain's head lock,
so a committed seq never appears behind a later one: reading `seq > cursor` misses nothing.
Sending claims due rows with `FOR UPDATE SKIP LOCKED` and a lease; a replica that dies while
sending leaves a lease that runs out and another replica sends the row again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import urllib.error
import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.audit.models import AuditEvent, SinkState
from core.audit.sink import http_post
from core.db import db_now, retrying, utcnow
from core.notify.declaration import CURSOR
from core.notify.direct import (
    DIRECT_EVENTS,
    UNCONFIGURED,
    DirectConfig,
    dm_routes,
    is_dm,
    send_dm,
)
from core.notify.messages import feishu_payload, sign, slack_payload, webhook_body
from core.notify.models import NotifyDelivery, NotifyRoute
from core.notify.notices import Notice, build_notice, classify

log = logging.getLogger(__name__)

MAX_BACKOFF = 300
LEASE = timedelta(seconds=60)
SIGNATURE_HEADER = "X-Shipdeck-Signature"
Post = Callable[[str, bytes, dict[str, str]], int]


def backoff(attempts: int) -> timedelta:
    """2, 4, 8 ... seconds after each failed attempt, at most `MAX_BACKOFF`."""
    return timedelta(seconds=min(2**attempts, MAX_BACKOFF))


def _matches(route: NotifyRoute, kind: str, project: str | None, environment: str | None) -> bool:
    return (
        (not route.events or kind in route.events)
        and (not route.projects or (project or "") in route.projects)
        and (not route.environments or (environment or "") in route.environments)
    )


def fan_out(session: Session, batch: int = 200) -> int:
    """Turn audit events after the cursor into deliveries; returns how many. Commits."""
    cursor = session.scalar(select(SinkState.delivered_seq).where(SinkState.name == CURSOR))
    newer = select(AuditEvent.seq).where(AuditEvent.seq > (cursor or 0)).limit(1)
    if cursor is None or session.scalar(newer) is None:
        session.rollback()  # read-only so far: an idle worker never takes SQLite's write lock
        return 0
    moved = session.execute(
        update(SinkState).where(SinkState.name == CURSOR).values(updated_at=utcnow())
    )
    if not moved.rowcount:  # type: ignore[attr-defined]
        session.rollback()  # no route was ever declared
        return 0
    state = session.get_one(SinkState, CURSOR, with_for_update=True, populate_existing=True)
    events = list(
        session.scalars(
            select(AuditEvent)
            .where(AuditEvent.seq > state.delivered_seq)
            .order_by(AuditEvent.seq)
            .limit(batch)
        )
    )
    if not events:
        session.commit()
        return 0
    routes = list(session.scalars(select(NotifyRoute)))
    created = 0
    for audit_event in events:
        kind = classify(audit_event)
        direct = kind in DIRECT_EVENTS
        if kind is None or not (routes or direct):
            continue
        notice = build_notice(session, audit_event, kind, None)
        if notice is None:
            continue
        names = [r.name for r in routes if _matches(r, kind, notice.project, notice.environment)]
        if direct:  # the requester hears it directly too, on every platform they linked
            names += dm_routes(session, notice.requested_by)
        for name in names:
            session.add(
                NotifyDelivery(
                    route=name,
                    event_seq=audit_event.seq,
                    event=kind,
                    release_number=audit_event.release_number,
                    state="pending",
                    attempts=0,
                    next_attempt_at=utcnow(),
                    log=[],
                )
            )
            created += 1
    state.delivered_seq = events[-1].seq
    session.commit()
    return created


def claim(session: Session, worker: str, limit: int = 20) -> list[int]:
    """Claim due deliveries for `worker` (rows other replicas hold are skipped). Commits."""
    now = db_now(session)
    due = or_(
        (NotifyDelivery.state == "pending") & (NotifyDelivery.next_attempt_at <= now),
        (NotifyDelivery.state == "sending") & (NotifyDelivery.claimed_until < now),
    )
    candidates = list(
        session.scalars(
            select(NotifyDelivery.id)
            .where(due)
            .order_by(NotifyDelivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    ids: list[int] = []
    for delivery_id in candidates:
        # Compare-and-set: on SQLite (no row locks) the write lock makes this the arbiter.
        claimed = session.execute(
            update(NotifyDelivery)
            .where(NotifyDelivery.id == delivery_id, due)
            .values(state="sending", claimed_by=worker, claimed_until=now + LEASE)
        )
        if claimed.rowcount:  # type: ignore[attr-defined]
            ids.append(delivery_id)
    session.commit()
    return ids


def _secret(route: NotifyRoute) -> str | None:
    if route.secret_env:
        return os.environ.get(route.secret_env) or None
    return route.secret


def send(route: NotifyRoute, notice: Notice, delivery_id: int, post: Post = http_post) -> int:
    """Send one notice on one route; the HTTP status (0 when unreachable)."""
    secret = _secret(route)
    if route.kind == "slack":
        from slack_sdk.webhook import WebhookClient

        try:
            response = WebhookClient(route.url, timeout=10).send_dict(slack_payload(notice))
        except (TimeoutError, urllib.error.URLError, OSError):
            return 0
        return int(response.status_code)
    if route.kind == "feishu":
        import json

        card = json.dumps(feishu_payload(notice, secret, int(time.time())), ensure_ascii=False)
        return post(route.url, card.encode(), {"Content-Type": "application/json"})
    body = webhook_body(notice)
    headers = {
        "Content-Type": "application/json",
        "X-Shipdeck-Event": notice.event,
        "X-Shipdeck-Delivery": str(delivery_id),
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret.encode(), body)
    return post(route.url, body, headers)


def deliver(
    sessions: sessionmaker[Session],
    delivery_id: int,
    worker: str,
    *,
    public_url: str | None,
    max_attempts: int,
    post: Post = http_post,
    direct: DirectConfig | None = None,
) -> str:
    """Send one claimed delivery and record the outcome; returns the new state."""
    with sessions() as session:
        row = session.get(NotifyDelivery, delivery_id)
        route = session.get(NotifyRoute, row.route) if row is not None else None
        audit_event = session.get(AuditEvent, row.event_seq) if row is not None else None
        if row is None or row.claimed_by != worker:
            return "lost"
        notice = build_notice(session, audit_event, row.event, public_url) if audit_event else None
        session.commit()  # hold no transaction (SQLite: no write lock) while the receiver answers
        error: str | None
        if is_dm(row.route) and notice is not None:
            status, error = send_dm(row.route, notice, direct or DirectConfig())
            final = error is not None and error.startswith(UNCONFIGURED)
        elif route is None or notice is None:
            status, error = 0, "route removed" if route is None else "release gone"
            final = True
        else:
            try:
                status = send(route, notice, delivery_id, post)
                error = (
                    None if 200 <= status < 300 else (f"HTTP {status}" if status else "unreachable")
                )
            except Exception as exc:  # a malformed URL or payload must not stop the worker
                status, error = 0, f"{type(exc).__name__}: {exc}"
            final = False
        # The send happened: recording its outcome is retried on its own (never the send).
        return retrying(
            lambda: _record(session, delivery_id, worker, status, error, final, max_attempts),
            what=f"recording notification delivery {delivery_id}",
            before_retry=session.rollback,
        )


def _record(
    session: Session,
    delivery_id: int,
    worker: str,
    status: int,
    error: str | None,
    final: bool,
    max_attempts: int,
) -> str:
    """Write one attempt's outcome on the delivery row; returns its new state. Commits."""
    now = db_now(session)
    row = session.get_one(NotifyDelivery, delivery_id, with_for_update=True, populate_existing=True)
    if row.claimed_by != worker:  # our lease ran out and another replica took it
        session.commit()
        return "lost"
    row.attempts += 1
    row.last_status, row.last_error = status, error
    row.log = [*row.log[-19:], {"at": now.isoformat(), "status": status, "error": error}]
    row.claimed_by, row.claimed_until = None, None
    if error is None:
        row.state, row.delivered_at = "delivered", now
    elif final or row.attempts >= max_attempts:
        row.state = "dead"
    else:
        row.state, row.next_attempt_at = "pending", now + backoff(row.attempts)
    state = row.state
    session.commit()
    return state


class NotifyWorker:
    """The delivery worker thread of one server process."""

    # Every live event pokes the worker. Under a burst of writes, rounds start at most this
    # often instead of one round, two transactions, per event; a poke after a quiet spell
    # still starts a round at once. A round fans out up to 200 events (`fan_out`'s batch), so
    # one worker keeps up with about 1,000 audit events a second.
    min_gap_seconds = 0.2

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        public_url: str | None = None,
        poll_seconds: float = 2,
        max_attempts: int = 8,
        post: Post = http_post,
        name: str | None = None,
        direct: DirectConfig | None = None,
    ) -> None:
        self.sessions = sessions
        self.public_url = public_url
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.post = post
        self.direct = direct or DirectConfig()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Fan out new events and send what is due; returns how many deliveries were tried."""
        try:
            retrying(self._fan_out, what="notification fan-out")
        except (IntegrityError, OperationalError):  # another replica fanned out the same batch
            log.info("notification fan-out raced another worker; trying again", exc_info=True)
        ids = retrying(self._claim, what="claiming notification deliveries")
        for delivery_id in ids:
            try:
                deliver(
                    self.sessions,
                    delivery_id,
                    self.name,
                    public_url=self.public_url,
                    max_attempts=self.max_attempts,
                    post=self.post,
                    direct=self.direct,
                )
            except Exception:  # the others claimed with it are sent now, not after its lease
                log.warning("notification delivery %d failed a round", delivery_id, exc_info=True)
        return len(ids)

    def _fan_out(self) -> int:
        with self.sessions() as session:
            return fan_out(session)

    def _claim(self) -> list[int]:
        with self.sessions() as session:
            return claim(session, self.name)

    def poke(self) -> None:
        """Look now rather than at the next tick (a live event was published)."""
        self._wake.set()

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name="shipdeck-notify", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (a send in progress finishes first)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                while self.run_once() and not self._stop.is_set():
                    pass
            except Exception:  # the database went away: try again at the next tick
                log.warning("notification worker failed a round", exc_info=True)
            if self._wake.wait(self.poll_seconds):
                # pokes until the gap is over join the next round
                self._stop.wait(self.min_gap_seconds - (time.monotonic() - started))
            self._wake.clear()

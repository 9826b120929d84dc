"""Streaming the chain to a SIEM: a webhook with an HMAC-signed body, retry with backoff.

Delivery is at-least-once and in chain order: a cursor (`audit_sinks.delivered_seq`) moves
only after the receiver answered 2xx; a failure schedules the same batch again after an
exponential backoff (2, 4, 8 ... seconds, at most `MAX_BACKOFF`). Receivers deduplicate by
`seq`, and can verify the events themselves (every chain field is in the body).

Any number of replicas may stream the same sink: a batch is claimed first (a compare-and-set
on the cursor that leases the sink for `LEASE_SECONDS`), so one replica posts it and the others
wait. Only a replica dying after the receiver accepted a batch, before its cursor moved, makes
that batch go twice (after the lease).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.audit.chain import canonical_json
from core.audit.export import event_json
from core.audit.models import AuditEvent, SinkState
from core.db import utcnow

MAX_BACKOFF = 300
LEASE_SECONDS = 60  # longer than a post may take (its timeout is 10 s)
SIGNATURE_HEADER = "X-Shipdeck-Signature"

Post = Callable[[str, bytes, dict[str, str]], int]


class Delivery(BaseModel):
    """What one delivery attempt did."""

    status: str  # delivered | idle | waiting | failed
    delivered_seq: int
    sent: int = 0
    failures: int = 0
    next_attempt_at: datetime | None = None
    error: str | None = None


def sign_body(secret: bytes, body: bytes) -> str:
    """The signature header value of a body: `sha256=<hex HMAC-SHA-256>`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def http_post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST with the standard library; the HTTP status (0 when unreachable)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def deliver(
    session: Session,
    *,
    url: str,
    secret: bytes,
    name: str = "webhook",
    batch: int = 100,
    post: Post = http_post,
    now: datetime | None = None,
) -> Delivery:
    """Send the next batch of events after the sink's cursor, if its backoff allows. Commits."""
    now = now or utcnow()
    state = session.get(SinkState, name)
    if state is None:  # the first delivery ever; another replica may be making the row too
        with contextlib.suppress(IntegrityError), session.begin_nested():
            session.add(SinkState(name=name, delivered_seq=0, failures=0))
        state = session.get_one(SinkState, name)
    if state.next_attempt_at is not None and state.next_attempt_at > now:
        result = _result("waiting", state)
        session.commit()
        return result
    rows = session.execute(
        select(AuditEvent.__table__)
        .where(AuditEvent.seq > state.delivered_seq)
        .order_by(AuditEvent.seq)
        .limit(batch)
    ).all()
    if not rows:
        result = _result("idle", state)
        session.commit()
        return result
    events = [event_json(row) for row in rows]
    cursor = state.delivered_seq
    claim: CursorResult[tuple[()]] = session.execute(  # type: ignore[assignment]
        update(SinkState)
        .where(
            SinkState.name == name,
            SinkState.delivered_seq == cursor,
            or_(SinkState.next_attempt_at.is_(None), SinkState.next_attempt_at <= now),
        )
        .values(next_attempt_at=now + timedelta(seconds=LEASE_SECONDS), updated_at=now)
    )
    session.commit()  # no transaction (on SQLite: no write lock) is held while the receiver answers
    if claim.rowcount != 1:  # another replica claimed this batch first
        state = session.get_one(SinkState, name, populate_existing=True)
        result = _result("waiting", state)
        session.commit()
        return result
    body = canonical_json({"events": events}).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_body(secret, body),
        "X-Shipdeck-Delivery": f"{name}:{events[0]['seq']}-{events[-1]['seq']}",
    }
    status = post(url, body, headers)
    state = session.get_one(SinkState, name, with_for_update=True)
    if state.delivered_seq != cursor:  # another replica moved the cursor meanwhile
        result = _result("idle", state)
        session.commit()
        return result
    state.updated_at = now
    if 200 <= status < 300:
        state.delivered_seq = int(events[-1]["seq"])
        state.failures, state.next_attempt_at, state.last_error = 0, None, None
        result = _result("delivered", state, sent=len(events))
    else:
        state.failures += 1
        delay = min(2**state.failures, MAX_BACKOFF)
        state.next_attempt_at = now + timedelta(seconds=delay)
        state.last_error = f"HTTP {status}" if status else "unreachable"
        result = _result("failed", state)
    session.commit()
    return result


def _result(status: str, state: SinkState, sent: int = 0) -> Delivery:
    return Delivery(
        status=status,
        delivered_seq=state.delivered_seq,
        sent=sent,
        failures=state.failures,
        next_attempt_at=state.next_attempt_at,
        error=state.last_error,
    )


def stream(
    *,
    sessions: sessionmaker[Session],
    url: str,
    secret: bytes,
    stop: threading.Event,
    name: str = "webhook",
    batch: int = 100,
    once: bool = False,
    report: Callable[[Delivery], None] | None = None,
) -> None:
    """Deliver until `stop` is set (or, with `once`, until nothing is pending).

    Polls every second when idle, and sleeps through a backoff or another replica's lease
    (re-checking at least every 5 s).
    """
    while not stop.is_set():
        with sessions() as session:
            result = deliver(session, url=url, secret=secret, name=name, batch=batch)
        if report is not None and result.status in ("delivered", "failed"):
            report(result)
        if result.status == "delivered":
            continue
        if once:
            return
        wait = 1.0
        if result.next_attempt_at is not None:
            wait = max(0.1, (result.next_attempt_at - utcnow()).total_seconds())
        stop.wait(min(wait, 5.0))

"""Linking events into the HMAC chain: at commit, after every other write, head lock last.

`record()` only queues an event on the session. When the session commits, the queued events
are linked under the head row's lock AFTER everything else in the transaction was written
(its rows flushed, its live events in the outbox), so the chain head is always the last lock a
transaction takes and can never be one side of a deadlock with a release row (issue 14).

Every writer of every replica queues on that one row, so how long it is held bounds the
cluster's write rate and every writer's wait. On PostgreSQL it is held for ONE round trip
after the lock: one statement writing the events and the head, sent with the COMMIT. Each
round trip costs the writing thread a turn of the interpreter lock among the server's busy
request threads (10-30 ms under load): with the five it used to take under the lock (events,
head, outbox, notify, commit), 20 writes a second kept the head locked all the time and
writers queued for seconds behind it (issue 14: write-mix p99 3-5 s at 50 clients).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, TextClause, bindparam, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from core.audit.keys import Keyring, load_keyring
from core.audit.models import REQUEST_ID_LIMIT, AuditEvent, AuditHead
from core.config import get_settings
from core.db import insert_rows, utcnow
from core.errors import Conflict
from core.permissions import SYSTEM, Actor
from core.queued import on_root_commit, queue
from core.text import clip

GENESIS = "0" * 64
ROTATED = "audit_key_rotated"
KEYRING = "shipdeck.audit.keyring"
_PENDING = "shipdeck.audit.pending"
_HEAD_FIELDS = ("last_seq", "last_hash", "count", "key_id", "mac")


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def iso(at: datetime) -> str:
    """The one text form of an event time that is signed and exported."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def content(row: Any) -> dict[str, Any]:
    """The signed fields of an event (a row, an ORM object or an export line's namespace)."""
    at = row.at if isinstance(row.at, str) else iso(row.at)
    return {
        "seq": row.seq,
        "at": at,
        "actor": row.actor,
        "on_behalf_of": row.on_behalf_of,
        "channel": row.channel,
        "request_id": row.request_id,
        "action": row.action,
        "project": row.project,
        "release_number": row.release_number,
        "before_state": row.before_state,
        "after_state": row.after_state,
        "data": row.data,
        "prev_hash": row.prev_hash,
        "key_id": row.key_id,
    }


def link_message(fields: dict[str, Any]) -> bytes:
    """The bytes an event's HMAC covers: its canonical content, previous link included."""
    return canonical_json({"kind": "event", **fields}).encode()


def head_message(last_seq: int, last_hash: str, base_seq: int, base_hash: str | None) -> bytes:
    """The bytes the head row's HMAC covers."""
    return canonical_json(
        {
            "kind": "head",
            "last_seq": last_seq,
            "last_hash": last_hash,
            "base_seq": base_seq,
            "base_hash": base_hash or GENESIS,
        }
    ).encode()


def install_keyring(session_or_factory: Any, keyring: Keyring) -> None:
    """Give sessions (a Session or a sessionmaker) the keyring their commits sign with."""
    if isinstance(session_or_factory, Session):
        session_or_factory.info[KEYRING] = keyring
        return
    info = dict(session_or_factory.kw.get("info") or {})
    info[KEYRING] = keyring
    session_or_factory.configure(info=info)


def keyring_of(session: Session) -> Keyring:
    """The session's keyring: installed by the wiring, else from the process settings."""
    ring = session.info.get(KEYRING)
    if not isinstance(ring, Keyring):
        url = bind_engine(session).url.render_as_string(hide_password=True)
        ring = load_keyring(get_settings(), url)
    ring.refresh()  # a `rotate-key` run by another process takes effect at the next write
    return ring


def bind_engine(session: Session) -> Engine:
    """The engine a session talks to."""
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    project: str | None = None,
    release_number: int | None = None,
    before: str | None = None,
    after: str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Queue one event in the caller's transaction; it is linked (seq, hash) when it commits."""
    audit_event = new_event(
        actor=actor,
        action=action,
        project=project,
        release_number=release_number,
        before=before,
        after=after,
        data=data,
    )
    queue(session, _PENDING, audit_event)
    return audit_event


def new_event(
    *,
    actor: Actor,
    action: str,
    project: str | None = None,
    release_number: int | None = None,
    before: str | None = None,
    after: str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """An unlinked event."""
    return AuditEvent(
        at=utcnow(),
        actor=actor.name,
        on_behalf_of=actor.on_behalf_of,
        channel=actor.channel.value,
        # clipped as its column stores it: the link is made over what is stored
        request_id=clip(actor.request_id, REQUEST_ID_LIMIT) if actor.request_id else None,
        action=action,
        project=project,
        release_number=release_number,
        before_state=before,
        after_state=after,
        data=json.loads(canonical_json(data or {})),
    )


@on_root_commit  # after the session's own hooks: every other row is written (and locked) first
def _link_pending(session: Session) -> None:
    pending: list[AuditEvent] = session.info.pop(_PENDING, [])
    if not pending:
        return
    ring = keyring_of(session)
    session.flush()
    # The session's own transaction may be committed here, with the chain's last write (a
    # connection lent by a caller is not the session's to end).
    link(session, pending, ring, commit=isinstance(session.get_bind(), Engine))


# Built once: every write transaction's commit locks it.
_HEAD = select(AuditHead).where(AuditHead.id == 1).with_for_update()


def lock_head(session: Session) -> AuditHead:
    """The head row, locked; created at genesis on an empty stream, refused on a headless one."""
    head = session.scalars(_HEAD).first()
    if head is not None:
        return head
    if session.scalar(select(func.count()).select_from(AuditEvent)):
        raise Conflict(
            "the audit head row is missing while events exist; the stream was tampered with "
            "(run `shipdeck audit verify`)"
        )
    try:
        with session.begin_nested():
            session.add(
                AuditHead(id=1, last_seq=0, last_hash=GENESIS, count=0, base_seq=0, base_hash=None)
            )
    except IntegrityError:  # another writer created it first
        pass
    return session.scalars(_HEAD).one()


def link(
    session: Session, pending: list[AuditEvent], ring: Keyring, *, commit: bool = False
) -> None:
    """Append events after the head (locked here), signing each and then the head.

    With `commit`, PostgreSQL commits the transaction with the last write, in the same round
    trip: nothing the transaction does may follow."""
    head = lock_head(session)
    linked: list[AuditEvent] = []
    if head.key_id is None and head.last_seq > head.base_seq:
        resign_legacy(session, head, ring)
    if head.key_id is not None and head.key_id not in ring.keys:
        raise Conflict(
            f"the audit chain is signed with key {head.key_id}, which this process does not "
            "hold: give it the current SHIPDECK_AUDIT_KEY (writes are refused until then)"
        )
    if head.key_id is not None and head.key_id != ring.current_id:
        rotation = next((e for e in pending if e.action == ROTATED), None)
        if rotation is None:
            rotation = new_event(actor=SYSTEM, action=ROTATED)
        else:
            pending.remove(rotation)
        rotation.data = {**rotation.data, "from_key": head.key_id, "to_key": ring.current_id}
        # Signed with the outgoing key: the old key vouches for its successor.
        _append(linked, head, ring, rotation, head.key_id)
    for audit_event in pending:
        if audit_event.action == ROTATED:  # a rotation request when the key did not change
            audit_event.data = {**audit_event.data, "to_key": ring.current_id}
        _append(linked, head, ring, audit_event, ring.current_id)
    sign_head(head, ring)
    _write_links(session, head, linked, commit=commit)


def _write_links(
    session: Session, head: AuditHead, linked: list[AuditEvent], *, commit: bool
) -> None:
    """Write the linked events and the moved head: one statement on PostgreSQL, sent with the
    COMMIT when `commit` (psycopg's pipeline), so the head is held for one round trip."""
    if bind_engine(session).dialect.name != "postgresql":
        session.add_all(linked)  # SQLite has no INSERT inside WITH; its lock is the whole
        session.flush()  # transaction's anyway (BEGIN IMMEDIATE)
        return
    params: dict[str, Any] = {"head_id": head.id}
    for name in _HEAD_FIELDS:  # written below: the ORM must not flush it again
        params[f"head_{name}"] = value = getattr(head, name)
        set_committed_value(head, name, value)
    for i, linked_event in enumerate(linked):
        for column in _EVENT_COLUMNS:
            params[f"{column}_{i}"] = getattr(linked_event, column)
    moved = _links_and_head(len(linked))
    connection = session.connection()
    raw = connection.connection.dbapi_connection
    pipeline = getattr(raw, "pipeline", None)
    if not commit or raw is None or pipeline is None or not _pipelines():
        connection.execute(moved, params)
        return
    # The server runs the write and the COMMIT back to back and frees the head at once: the
    # lock no longer waits for this thread's next turn of the interpreter lock between them.
    # SQLAlchemy's own COMMIT then finds no transaction open and sends nothing.
    dbapi = connection.dialect.loaded_dbapi
    try:
        with pipeline():
            connection.execute(moved, params)
            raw.commit()
    except dbapi.Error as exc:  # raised when the pipeline syncs, outside SQLAlchemy's wrapping
        raise DBAPIError.instance(None, None, exc, dbapi.Error) from exc


_EVENT_COLUMNS = tuple(c.name for c in AuditEvent.__table__.columns)


@lru_cache(maxsize=16)
def _links_and_head(count: int) -> TextClause:
    """`count` events and the moved head as one statement, built once per count (compiled
    anew for every write, with the head locked, it was; see `insert_rows`)."""
    into, binds = insert_rows(AuditEvent, _EVENT_COLUMNS, count)
    head = AuditHead.__table__
    moved = ", ".join(f"{name} = :head_{name}" for name in _HEAD_FIELDS)
    return text(
        f"WITH linked AS ({into}) UPDATE {AuditHead.__tablename__} SET {moved} WHERE id = :head_id"
    ).bindparams(
        *binds, *(bindparam(f"head_{name}", type_=head.c[name].type) for name in _HEAD_FIELDS)
    )


def _pipelines() -> bool:
    """Whether psycopg's libpq can pipeline (14 or newer; psycopg[binary] bundles one)."""
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


def _append(
    linked: list[AuditEvent], head: AuditHead, ring: Keyring, audit_event: AuditEvent, kid: str
) -> None:
    audit_event.seq = head.last_seq + 1
    audit_event.prev_hash = head.last_hash
    audit_event.key_id = kid if kid in ring.keys else ring.current_id
    mac = ring.mac(audit_event.key_id, link_message(content(audit_event)))
    assert mac is not None
    audit_event.hash = mac
    linked.append(audit_event)
    head.last_seq, head.last_hash = audit_event.seq, audit_event.hash
    head.count = (head.count or 0) + 1


def sign_head(head: AuditHead, ring: Keyring) -> None:
    """Sign the head row with the current key."""
    head.key_id, head.mac = ring.sign(
        head_message(head.last_seq, head.last_hash, head.base_seq or 0, head.base_hash)
    )


def legacy_hash(fields: dict[str, Any]) -> str:
    """The unkeyed SHA-256 link of events written before the keyed chain."""
    old = {k: v for k, v in fields.items() if k != "key_id"}
    return hashlib.sha256(canonical_json(old).encode()).hexdigest()


def resign_legacy(session: Session, head: AuditHead, ring: Keyring) -> None:
    """Re-sign pre-key events with the key, only if their old chain still verifies intact."""
    rows = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
    prev, seq = GENESIS, 0
    for row in rows:
        fields = content(row)
        if row.seq != seq + 1 or row.prev_hash != prev or legacy_hash(fields) != row.hash:
            return  # broken before we came: leave it for verify to report
        prev, seq = row.hash, row.seq
    if seq != head.last_seq or prev != head.last_hash:
        return
    prev = GENESIS
    for row in rows:
        row.prev_hash, row.key_id = prev, ring.current_id
        mac = ring.mac(ring.current_id, link_message(content(row)))
        assert mac is not None
        row.hash = prev = mac
    head.last_hash = prev
    session.flush()


def ensure_started(session: Session) -> bool:
    """Begin the stream on a new database with a signed first event; True if it did. Commits.

    A database that never had a head then differs from one whose head was deleted: only a
    stream that began verifies.
    """
    if session.get(AuditHead, 1) is not None or session.scalar(
        select(func.count()).select_from(AuditEvent)
    ):
        session.rollback()
        return False
    record(session, actor=SYSTEM, action="audit_started")
    session.commit()
    return True

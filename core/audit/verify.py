"""Verifying the chain from one read snapshot, or from an export file, against checkpoints."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import Connection, Engine, create_engine, event, inspect, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from core.audit.chain import (
    GENESIS,
    ROTATED,
    bind_engine,
    canonical_json,
    content,
    head_message,
    iso,
    keyring_of,
    link_message,
)
from core.audit.keys import Keyring
from core.audit.models import AuditEvent, AuditHead
from core.db import utcnow
from core.errors import InvalidInput


class Unexplained(BaseModel):
    """A release whose current state the audit stream does not justify."""

    release_id: str
    project: str
    state: str
    reason: str


class AuditVerification(BaseModel):
    """The result of walking the chain."""

    ok: bool
    checked: int
    last_seq: int
    first_broken_seq: int | None = None
    reason: str | None = None
    base_seq: int = Field(default=0, description="Events up to here were archived away.")
    checkpoint_seq: int | None = Field(default=None, description="The checkpoint checked, if any.")
    unexplained: list[Unexplained] = Field(
        default_factory=list, description="Releases whose state the stream does not explain."
    )


class Checkpoint(BaseModel):
    """A signed statement that event `seq` had hash `head_hash` at time `at`."""

    seq: int
    head_hash: str
    at: str
    key_id: str
    signature: str

    def message(self) -> bytes:
        """The bytes the signature covers."""
        body = {"kind": "checkpoint", "seq": self.seq, "head_hash": self.head_hash, "at": self.at}
        return canonical_json(body).encode()


def sign_checkpoint(ring: Keyring, seq: int, head_hash: str) -> Checkpoint:
    """A checkpoint of event `seq` with hash `head_hash`, signed now with the current key."""
    unsigned = Checkpoint(seq=seq, head_hash=head_hash, at=iso(utcnow()), key_id="", signature="")
    kid, signature = ring.sign(unsigned.message())
    return unsigned.model_copy(update={"key_id": kid, "signature": signature})


def read_checkpoint(path: Path) -> Checkpoint:
    """Parse a checkpoint file, or raise InvalidInput."""
    try:
        return Checkpoint.model_validate_json(path.read_text())
    except (OSError, ValidationError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not a shipdeck checkpoint: {type(exc).__name__}") from exc


class NoStream(InvalidInput):
    """There is no audit stream to verify (no database, or no audit tables)."""


_readers: dict[str, Engine] = {}


@contextmanager
def read_snapshot(engine: Engine) -> Iterator[Connection]:
    """One consistent read-only snapshot that takes no write lock.

    PostgreSQL: a REPEATABLE READ, READ ONLY transaction. SQLite: a plain (deferred) read
    transaction on its own connection: WAL readers see one snapshot and block nobody.
    """
    if engine.dialect.name == "sqlite":
        database = engine.url.database
        if database not in (None, "", ":memory:") and not Path(database).exists():
            raise NoStream(f"the database {database} does not exist")
        reader = _reader(engine)
        with reader.connect() as connection:
            connection.exec_driver_sql("BEGIN")
            yield connection
        return
    with engine.connect() as connection:
        snapshot = connection.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        with snapshot.begin():
            yield snapshot


def _reader(engine: Engine) -> Engine:
    url = engine.url.render_as_string(hide_password=False)
    if url not in _readers:
        reader = create_engine(
            url, poolclass=NullPool, connect_args={"check_same_thread": False, "timeout": 30}
        )

        @event.listens_for(reader, "connect")
        def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue a deferred BEGIN ourselves

        _readers[url] = reader
    return _readers[url]


@dataclass
class Walker:
    """Checks links one event at a time; keeps what a checkpoint needs."""

    ring: Keyring
    last_seq: int
    last_hash: str
    checked: int = 0
    expected_key: str | None = None
    watch: int | None = None
    watched_hash: str | None = None
    problem: tuple[int, str] | None = field(default=None)

    def feed(self, fields: dict[str, Any], mac: str) -> bool:
        """Check one event; False (and `problem` set) at the first broken link."""
        seq = fields["seq"]
        if seq != self.last_seq + 1:
            if isinstance(seq, int) and seq > self.last_seq + 1:
                return self._fail(self.last_seq + 1, "is missing (deleted)")
            return self._fail(seq, "is out of order (reordered or duplicated)")
        if fields["prev_hash"] != self.last_hash:
            return self._fail(seq, "does not link to the one before it")
        kid = fields["key_id"]
        if kid is None:
            return self._fail(seq, "is not signed (written before the keyed chain)")
        if kid not in self.ring.keys:
            return self._fail(seq, f"is signed with an unknown key {kid}")
        if not self.ring.check(kid, link_message(fields), mac):
            return self._fail(seq, "was changed after it was written")
        if self.expected_key is not None and kid != self.expected_key:
            return self._fail(seq, "is signed with a key the chain never rotated to")
        data = fields["data"] if isinstance(fields["data"], dict) else {}
        self.expected_key = data.get("to_key") if fields["action"] == ROTATED else kid
        self.last_seq, self.last_hash = seq, mac
        self.checked += 1
        if seq == self.watch:
            self.watched_hash = mac
        return True

    def _fail(self, seq: Any, what: str) -> bool:
        self.problem = (seq if isinstance(seq, int) else self.last_seq + 1, f"event {seq} {what}")
        return False

    def result(self, base_seq: int = 0, **extra: Any) -> AuditVerification:
        """The verification so far (broken if a link was)."""
        if self.problem is not None:
            seq, reason = self.problem
            return self.broken(seq, reason, base_seq)
        return AuditVerification(
            ok=True, checked=self.checked, last_seq=self.last_seq, base_seq=base_seq, **extra
        )

    def broken(self, seq: int, reason: str, base_seq: int = 0) -> AuditVerification:
        """A failed verification naming the first broken event."""
        return AuditVerification(
            ok=False,
            checked=self.checked,
            last_seq=self.last_seq,
            first_broken_seq=seq,
            reason=reason,
            base_seq=base_seq,
        )


def check_checkpoint(walker: Walker, cp: Checkpoint, base_seq: int, base_hash: str) -> str | None:
    """Why the checkpoint does not hold for what the walker saw, or None when it does."""
    if not walker.ring.check(cp.key_id, cp.message(), cp.signature):
        return "the checkpoint's signature does not match (forged, or signed with another key)"
    if cp.seq > walker.last_seq:
        return (
            f"checkpoint {cp.seq} was cut after the stream's last event {walker.last_seq}: "
            "events after it were deleted"
        )
    if cp.seq < base_seq:
        return None  # archived: the archive file and its own checkpoint prove that part
    seen = base_hash if cp.seq == base_seq else walker.watched_hash
    if seen != cp.head_hash:
        return f"event {cp.seq} differs from the checkpoint: history before it was changed"
    return None


def verify(
    session: Session,
    *,
    checkpoint: Checkpoint | None = None,
    keyring: Keyring | None = None,
    explain: bool = True,
) -> AuditVerification:
    """Recompute every link in one snapshot; check the signed head, a checkpoint, the releases."""
    engine = bind_engine(session)
    ring = keyring or keyring_of(session)
    try:
        with read_snapshot(engine) as connection:
            return verify_connection(connection, ring, checkpoint=checkpoint, explain=explain)
    except NoStream as exc:
        return AuditVerification(ok=False, checked=0, last_seq=0, reason=exc.message)
    except OperationalError as exc:  # no such database, or it cannot be reached
        reason = f"the database cannot be opened ({type(exc.orig).__name__})"
        return AuditVerification(ok=False, checked=0, last_seq=0, reason=reason)


def verify_connection(
    connection: Connection,
    ring: Keyring,
    *,
    checkpoint: Checkpoint | None = None,
    explain: bool = True,
) -> AuditVerification:
    """Verify on an open (snapshot) connection."""
    if not inspect(connection).has_table("audit_events"):
        raise NoStream("this database holds no audit stream (no audit tables)")
    head = connection.execute(select(AuditHead.__table__).where(AuditHead.id == 1)).first()
    if head is None:
        empty = Walker(ring, 0, GENESIS)
        return empty.broken(1, "the audit head row is missing (deleted, or the stream never began)")
    base_seq, base_hash = head.base_seq or 0, head.base_hash or GENESIS
    walker = Walker(ring, base_seq, base_hash, watch=checkpoint.seq if checkpoint else None)
    rows = connection.execute(
        select(AuditEvent.__table__)
        .where(AuditEvent.seq > base_seq)
        .order_by(AuditEvent.seq)
        .execution_options(yield_per=1000)
    )
    for row in rows:
        if not walker.feed(content(row), row.hash):
            break
    rows.close()
    if walker.problem is not None:
        return walker.result(base_seq)
    if walker.checked == 0 and base_seq == 0:
        return walker.broken(1, "the audit stream is empty (deleted, or it never began)")
    message = head_message(head.last_seq, head.last_hash, head.base_seq or 0, head.base_hash)
    if not ring.check(head.key_id, message, head.mac):
        return walker.broken(
            min(head.last_seq, walker.last_seq) + 1,
            "the audit head row was changed (its signature does not match)",
            base_seq,
        )
    if (head.last_seq, head.last_hash) != (walker.last_seq, walker.last_hash):
        if walker.last_seq < head.last_seq:
            return walker.broken(
                walker.last_seq + 1,
                f"events after {walker.last_seq} are missing (deleted)",
                base_seq,
            )
        return walker.broken(
            head.last_seq + 1, f"events after the head {head.last_seq} were added", base_seq
        )
    extra: dict[str, Any] = {}
    if checkpoint is not None:
        why = check_checkpoint(walker, checkpoint, base_seq, base_hash)
        if why is not None:
            return walker.broken(min(checkpoint.seq, walker.last_seq + 1), why, base_seq)
        extra["checkpoint_seq"] = checkpoint.seq
    if explain:
        from core.flows.evidence import unexplained_releases

        found = unexplained_releases(connection, archived=base_seq > 0)
        if found:
            result = walker.result(base_seq, **extra)
            first = found[0]
            return result.model_copy(
                update={
                    "ok": False,
                    "unexplained": found,
                    "reason": f"{len(found)} release(s) are in a state the audit stream does not "
                    f"explain, first {first.release_id}: {first.reason}",
                }
            )
    return walker.result(base_seq, **extra)


def verify_lines(
    lines: Iterable[str], ring: Keyring, *, checkpoint: Checkpoint | None = None
) -> AuditVerification:
    """Verify an exported JSONL segment on its own (no database needed)."""
    walker: Walker | None = None
    base_seq, base_hash = 0, GENESIS
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            fields = content(SimpleNamespace(**{k: raw[k] for k in _FIELDS}))
            mac = str(raw["hash"])
        except (ValueError, KeyError, TypeError) as exc:
            seq = walker.last_seq + 1 if walker else 1
            return Walker(ring, seq - 1, GENESIS).broken(
                seq, f"line {number} is not an audit event ({type(exc).__name__})"
            )
        if walker is None:
            base_seq = int(fields["seq"]) - 1
            base_hash = str(fields["prev_hash"])
            if base_seq == 0 and base_hash != GENESIS:
                return Walker(ring, 0, GENESIS).broken(1, "event 1 does not start the chain")
            walker = Walker(ring, base_seq, base_hash, watch=checkpoint.seq if checkpoint else None)
        if not walker.feed(fields, mac):
            return walker.result(base_seq)
    if walker is None:
        return Walker(ring, 0, GENESIS).broken(1, "the file holds no audit events")
    extra: dict[str, Any] = {}
    if checkpoint is not None:
        if checkpoint.seq < base_seq:
            return walker.broken(base_seq + 1, "the file starts after the checkpoint", base_seq)
        why = check_checkpoint(walker, checkpoint, base_seq, base_hash)
        if why is not None:
            return walker.broken(min(checkpoint.seq, walker.last_seq + 1), why, base_seq)
        extra["checkpoint_seq"] = checkpoint.seq
    return walker.result(base_seq, **extra)


_FIELDS = (
    "seq",
    "at",
    "actor",
    "on_behalf_of",
    "channel",
    "request_id",
    "action",
    "project",
    "release_number",
    "before_state",
    "after_state",
    "data",
    "prev_hash",
    "key_id",
)

"""Exporting the chain (JSONL/CSV with every chain field) and archiving old segments."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.audit.chain import (
    bind_engine,
    canonical_json,
    content,
    iso,
    keyring_of,
    record,
    sign_head,
)
from core.audit.keys import Keyring
from core.audit.models import AccessRecord, AuditEvent, AuditHead
from core.audit.verify import read_snapshot, sign_checkpoint, verify_lines
from core.errors import Conflict, InvalidInput
from core.ids import release_id
from core.permissions import Action, Actor, require

COLUMNS = [
    "seq",
    "at",
    "actor",
    "on_behalf_of",
    "channel",
    "request_id",
    "action",
    "project",
    "release_number",
    "release_id",
    "before_state",
    "after_state",
    "data",
    "prev_hash",
    "key_id",
    "hash",
]


def event_json(row: Any) -> dict[str, Any]:
    """One event as exported and streamed: every signed field, `hash`, and `release_id`."""
    fields = content(row)
    number = fields["release_number"]
    return {**fields, "release_id": release_id(number) if number else None, "hash": row.hash}


def _rows(
    session: Session, since: datetime | None, until: datetime | None, upto: int | None = None
) -> Iterator[Any]:
    query = select(AuditEvent.__table__).order_by(AuditEvent.seq)
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    if upto is not None:
        query = query.where(AuditEvent.seq <= upto)
    with read_snapshot(bind_engine(session)) as connection:
        yield from connection.execute(query.execution_options(yield_per=1000))


def export(
    session: Session,
    out: TextIO,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: str = "jsonl",
) -> int:
    """Write events with `since <= at < until` (one snapshot) as JSONL or CSV; returns the count."""
    count = -1 if fmt == "csv" else 0  # the CSV header is not an event
    for chunk in export_chunks(session, since=since, until=until, fmt=fmt):
        out.write(chunk)
        count += 1
    return max(count, 0)


def export_chunks(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: str = "jsonl",
) -> Iterator[str]:
    """The export as text chunks (the CSV header, then one per event), for streaming."""
    if fmt not in ("jsonl", "csv"):
        raise InvalidInput(f"unknown export format {fmt!r}: jsonl or csv")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
        yield _take(buffer)
    for row in _rows(session, since, until):
        line = event_json(row)
        if writer is not None:
            writer.writerow({**line, "data": canonical_json(line["data"])})
            yield _take(buffer)
        else:
            yield canonical_json(line) + "\n"


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


ACCESS_COLUMNS = [
    "id",
    "at",
    "actor",
    "on_behalf_of",
    "channel",
    "request_id",
    "tool",
    "project",
    "args",
]


def export_access(
    session: Session,
    out: TextIO,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    fmt: str = "jsonl",
) -> int:
    """Write the access log (reads: who looked at what) with `since <= at < until`."""
    if fmt not in ("jsonl", "csv"):
        raise InvalidInput(f"unknown export format {fmt!r}: jsonl or csv")
    query = select(AccessRecord.__table__).order_by(AccessRecord.id)
    if since is not None:
        query = query.where(AccessRecord.at >= since)
    if until is not None:
        query = query.where(AccessRecord.at < until)
    writer = csv.DictWriter(out, fieldnames=ACCESS_COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    count = 0
    with read_snapshot(bind_engine(session)) as connection:
        for row in connection.execute(query.execution_options(yield_per=1000)):
            line = {c: getattr(row, c) for c in ACCESS_COLUMNS} | {"at": iso(row.at)}
            if writer is not None:
                writer.writerow(line)
            else:
                out.write(canonical_json(line) + "\n")
            count += 1
    return count


class ArchiveResult(BaseModel):
    """What an archive run cut: the segment file, its checkpoint, the range."""

    file: str
    checkpoint_file: str
    first_seq: int
    last_seq: int
    sha256: str


def archive(
    session: Session,
    *,
    actor: Actor,
    before: datetime,
    directory: Path,
    keyring: Keyring | None = None,
) -> ArchiveResult | None:
    """Move events older than `before` into a JSONL segment plus its checkpoint, then delete them.

    The segment is written and verified from a snapshot first; the delete is one short
    transaction that re-checks the cut point and moves the head's signed base to it, so
    verify holds across the cut (and the segment verifies on its own with its checkpoint).
    """
    require(actor, Action.admin, None)
    ring = keyring or keyring_of(session)
    head = session.get(AuditHead, 1)
    if head is None:
        return None
    base = head.base_seq or 0
    session.rollback()
    last_row = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.at < before, AuditEvent.seq > base)
        .order_by(AuditEvent.seq.desc())
        .limit(1)
    ).first()
    session.rollback()
    if last_row is None:
        return None
    last, last_hash = last_row.seq, last_row.hash
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"audit-{base + 1:010d}-{last:010d}"
    segment = directory / f"{stem}.jsonl"
    digest = hashlib.sha256()
    with segment.open("w", encoding="utf-8") as out:
        for row in _rows(session, None, None, upto=last):
            if row.seq <= base:
                continue
            line = canonical_json(event_json(row)) + "\n"
            digest.update(line.encode())
            out.write(line)
    cp = sign_checkpoint(ring, last, last_hash)
    cp_file = directory / f"{stem}.checkpoint.json"
    cp_file.write_text(cp.model_dump_json())
    with segment.open(encoding="utf-8") as lines:
        checked = verify_lines(lines, ring, checkpoint=cp)
    if not checked.ok:
        raise Conflict(f"the segment to archive does not verify; nothing deleted: {checked.reason}")
    locked = session.scalars(select(AuditHead).where(AuditHead.id == 1).with_for_update()).one()
    cut = session.get(AuditEvent, last)
    if (locked.base_seq or 0) != base or cut is None or cut.hash != last_hash:
        session.rollback()
        raise Conflict("the chain changed while archiving; nothing deleted")
    session.execute(delete(AuditEvent).where(AuditEvent.seq <= last))
    locked.base_seq, locked.base_hash = last, last_hash
    sign_head(locked, ring)
    record(
        session,
        actor=actor,
        action="audit_archived",
        data={
            "first_seq": base + 1,
            "last_seq": last,
            "last_hash": last_hash,
            "file": segment.name,
            "sha256": digest.hexdigest(),
        },
    )
    session.commit()
    return ArchiveResult(
        file=str(segment),
        checkpoint_file=str(cp_file),
        first_seq=base + 1,
        last_seq=last,
        sha256=digest.hexdigest(),
    )


def read_lines(path: Path) -> Iterator[str]:
    """The lines of an export file (JSONL)."""
    with path.open(encoding="utf-8") as handle:
        yield from handle


def parse_when(value: str) -> datetime:
    """An ISO date or datetime (UTC when no zone is given), or InvalidInput."""
    from datetime import UTC

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidInput(
            f"{value!r} is not an ISO date (2026-01-31 or 2026-01-31T12:00)"
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed

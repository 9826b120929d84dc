"""Idempotency keys: a retried mutating call replays the first answer instead of acting twice."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from core.db import Base, UTCDateTime, utcnow
from core.errors import Conflict, InvalidInput


class IdempotencyRecord(Base):
    """The first answer to a (user, key) call."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("user_id", "key", name="uq_idempotency_user_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column()
    response: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def request_hash(method: str, path: str, body: bytes) -> str:
    """What makes two calls 'the same call'."""
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def begin(
    session: Session, *, user_id: int, key: str, fingerprint: str, ttl_seconds: int
) -> IdempotencyRecord | None:
    """Reserve a key; return the stored record when the key was seen before. Commits.

    Raises Conflict if the key is in flight or was used for a different request.
    """
    if not 1 <= len(key) <= 128 or not key.isprintable():
        raise InvalidInput("Idempotency-Key must be 1 to 128 printable characters")
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.user_id == user_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.created_at < utcnow() - timedelta(seconds=ttl_seconds),
        )
    )
    try:
        session.add(IdempotencyRecord(user_id=user_id, key=key, request_hash=fingerprint))
        session.commit()
        return None
    except IntegrityError:
        session.rollback()
    found = session.scalars(
        select(IdempotencyRecord).where(
            IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key
        )
    ).one()
    if found.request_hash != fingerprint:
        raise Conflict("this Idempotency-Key was already used for a different request", key=key)
    if found.status_code is None:
        raise Conflict("a request with this Idempotency-Key is still in progress", key=key)
    return found


def finish(session: Session, *, user_id: int, key: str, status_code: int, response: Any) -> None:
    """Store the answer to replay. Commits."""
    found = session.scalars(
        select(IdempotencyRecord).where(
            IdempotencyRecord.user_id == user_id, IdempotencyRecord.key == key
        )
    ).one()
    found.status_code, found.response = status_code, response
    session.commit()


def forget(session: Session, *, user_id: int, key: str) -> None:
    """Drop a reservation whose request crashed, so a retry can run. Commits."""
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.user_id == user_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.status_code.is_(None),
        )
    )
    session.commit()

"""The access log writer: reads are queued and written in batches, off the request path.

A read (who looked at what) is one queued record; one background thread per database flushes
the queue as one multi-row INSERT and one commit every `interval` seconds or at `batch_size`
rows. A reader never waits on the database for its record: on SQLite a long write no longer
holds reads behind its lock, on PostgreSQL a request no longer pays a commit.

What a crash costs: records still queued when the process is killed (at most `interval`
seconds of reads, or the time a stalled database held the writer) are lost. A full queue drops
the new record (counted, logged) rather than block a reader; a failed flush is retried, then
its records are counted as lost and logged; nothing raises into a request.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, insert
from sqlalchemy.exc import SQLAlchemyError

from core.audit.models import AccessRecord
from core.db import utcnow
from core.permissions import Actor
from core.text import clip

log = logging.getLogger("shipdeck.audit.access")

ARGS_LIMIT = 2000
NAME_LIMIT = 64


@dataclass(frozen=True)
class AccessStats:
    """What the writer has done since it started."""

    written: int
    dropped: int
    lost: int
    queued: int


class AccessLog:
    """A bounded queue of access records and the one thread that writes them in batches."""

    def __init__(
        self,
        engine: Engine,
        *,
        interval: float = 0.2,
        batch_size: int = 500,
        capacity: int = 10_000,
        retries: int = 3,
        idle_exit: float = 5.0,
    ) -> None:
        self.engine = engine
        self.interval = interval
        self.batch_size = batch_size
        self.capacity = capacity
        self.retries = retries
        self.idle_exit = idle_exit
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._done = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._urgent = 0  # flush() callers waiting: write now, not at the next tick
        self._enqueued = 0  # records accepted so far (sequence numbers)
        self._settled = 0  # records written or lost so far
        self._written = 0
        self._dropped = 0
        self._lost = 0
        self._last_warning = 0.0

    def record(self, *, actor: Actor, tool: str, project: str | None, args: str) -> bool:
        """Queue one read; False when the queue is full and the record was dropped."""
        row = {
            "at": utcnow(),
            "actor": clip(actor.name, NAME_LIMIT),
            "on_behalf_of": clip(actor.on_behalf_of, NAME_LIMIT) if actor.on_behalf_of else None,
            "channel": actor.channel.value,
            "request_id": clip(actor.request_id, NAME_LIMIT) if actor.request_id else None,
            "tool": clip(tool, NAME_LIMIT),
            "project": project if project is None or len(project) <= NAME_LIMIT else None,
            "args": clip(args, ARGS_LIMIT),
        }
        with self._lock:
            if len(self._queue) >= self.capacity:
                self._dropped += 1
                self._warn("access log queue full (%d records): dropped a read", len(self._queue))
                return False
            self._queue.append(row)
            self._enqueued += 1
            if len(self._queue) in (1, self.batch_size):
                self._wake.notify()  # the first record starts a batch's clock; a full one goes
            self._ensure_thread()
        return True

    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything queued before this call; True once it is written (or counted lost)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self._enqueued
            if self._settled >= target:
                return True
            if self._thread is None:
                # no writer thread (closed, or a record queued after close): write inline
                batch = self._take(len(self._queue))
                self._lock.release()
                try:
                    self._write(batch)
                finally:
                    self._lock.acquire()
                return self._settled >= target
            self._urgent += 1
            self._wake.notify()
            try:
                while self._settled < target:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._done.wait(left)
            finally:
                self._urgent -= 1
            return True

    def close(self, timeout: float = 30.0) -> None:
        """Flush what is queued and stop the writer thread (shutdown)."""
        self.flush(timeout)
        with self._lock:
            self._closed = True
            thread = self._thread
            self._wake.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self.flush(timeout)  # anything that arrived while stopping, written inline

    def stats(self) -> AccessStats:
        """Counters: written, dropped (queue full), lost (flush failed), queued now."""
        with self._lock:
            return AccessStats(self._written, self._dropped, self._lost, len(self._queue))

    # ------------------------------------------------------------------ the writer thread

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(
                target=self._run, name="shipdeck-access-log", daemon=True
            )
            self._thread.start()

    def _take(self, count: int) -> list[dict[str, Any]]:
        return [self._queue.popleft() for _ in range(min(count, len(self._queue)))]

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._lock:
                if not self._queue and not self._closed:
                    # wait for the first record of the next batch (or go away when idle long)
                    self._wake.wait(self.idle_exit)
                    if not self._queue:
                        if self._closed or time.monotonic() - idle_since >= self.idle_exit:
                            self._thread = None
                            return
                        continue
                if self._closed and not self._queue:
                    self._thread = None
                    return
                # gather a batch: wait up to `interval` unless it is full or someone flushes
                until = time.monotonic() + self.interval
                while (
                    len(self._queue) < self.batch_size
                    and not self._urgent
                    and not self._closed
                    and (left := until - time.monotonic()) > 0
                ):
                    self._wake.wait(left)
                batch = self._take(self.batch_size)
            self._write(batch)
            idle_since = time.monotonic()

    def _write(self, batch: list[dict[str, Any]]) -> None:
        if not batch:
            return
        error: Exception | None = None
        for attempt in range(self.retries):
            try:
                with self.engine.begin() as connection:
                    connection.execute(insert(AccessRecord), batch)
                error = None
                break
            except SQLAlchemyError as exc:  # the database is away or locked: retry, then count
                error = exc
                time.sleep(min(0.05 * 2**attempt, 1.0))  # backoff between retries
        with self._lock:
            if error is None:
                self._written += len(batch)
            else:
                self._lost += len(batch)
                log.error(
                    "access log: %d read records lost after %d attempts (%s)",
                    len(batch),
                    self.retries,
                    type(error).__name__,
                )
            self._settled += len(batch)
            self._done.notify_all()

    def _warn(self, message: str, *args: Any) -> None:
        # one line per second at most: a full queue must not flood the log
        now = time.monotonic()
        if now - self._last_warning >= 1.0:
            self._last_warning = now
            log.warning(message + " (%d dropped so far)", *args, self._dropped)


_writers: weakref.WeakKeyDictionary[Engine, AccessLog] = weakref.WeakKeyDictionary()
_writers_lock = threading.Lock()


def access_log(engine: Engine) -> AccessLog:
    """The process's access log writer for this database (one per engine)."""
    with _writers_lock:
        writer = _writers.get(engine)
        if writer is None:
            writer = _writers[engine] = AccessLog(engine)
        return writer

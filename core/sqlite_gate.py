"""Turns at SQLite's one write lock, first come first served, among one process's threads.

SQLite has no queue for its write lock: a writer that finds it taken sleeps and retries on a
back-off that grows to 100 ms, and whoever happens to retry right after a commit gets it. Under
steady writes an unlucky request loses round after round (seconds behind shorter ones). The
gate queues this process's writers before `BEGIN IMMEDIATE` and hands the lock on in arrival
order the moment the holder commits or rolls back; other processes still meet SQLite's own
busy handling, as before.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque

from core.metrics import SQLITE_WRITE_WAIT_SECONDS

log = logging.getLogger(__name__)
_GATES: dict[str, WriteGate] = {}
_GATES_LOCK = threading.Lock()


class WriteGate:
    """A fair lock: `acquire` waits its turn behind earlier callers; `release` hands it on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = False
        self._queue: deque[threading.Event] = deque()

    @property
    def held(self) -> bool:
        """Whether some connection has the turn now."""
        with self._lock:
            return self._held

    @property
    def waiting(self) -> int:
        """How many callers are queued behind the holder."""
        with self._lock:
            return len(self._queue)

    def acquire(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for this caller's turn; False when it did not come."""
        with self._lock:
            if not self._held:
                self._held = True
                return True
            turn = threading.Event()
            self._queue.append(turn)
        if turn.wait(timeout):
            return True
        with self._lock:
            if turn.is_set():  # handed over just as the wait ended: the turn is ours
                return True
            self._queue.remove(turn)
            return False

    def release(self) -> None:
        """Hand the lock to the longest waiter, or free it."""
        with self._lock:
            if self._queue:
                self._queue.popleft().set()  # still held: ownership moves to that waiter
            else:
                self._held = False


def gate_for(path: str) -> WriteGate:
    """The one gate of a database file in this process (every engine on it shares it)."""
    with _GATES_LOCK:
        return _GATES.setdefault(path, WriteGate())


class GatedConnection(sqlite3.Connection):
    """A sqlite3 connection that gives its gate turn back when its transaction ends."""

    gate: WriteGate | None = None
    holds_gate = False

    def take_turn(self, timeout: float) -> None:
        """Wait for this process's turn at the write lock (call right before BEGIN IMMEDIATE).

        The gate only orders this process's writers; SQLite still guards the data. So a turn
        that does not come within `timeout` is not an error: the writer goes on to SQLite's
        own wait, as if there were no gate, and the stall is logged.
        """
        if self.gate is None or self.holds_gate:
            return
        started = time.monotonic()
        if self.gate.acquire(timeout):
            self.holds_gate = True
        else:
            log.warning("no write turn within %.0f s; waiting on SQLite's lock instead", timeout)
        SQLITE_WRITE_WAIT_SECONDS.observe(time.monotonic() - started)

    def give_back(self) -> None:
        """End this connection's turn (its transaction ended or never began)."""
        if self.holds_gate and self.gate is not None:
            self.holds_gate = False
            self.gate.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.give_back()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.give_back()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_back()

    def __del__(self) -> None:
        # A connection dropped without close() (garbage collected) must not keep the turn.
        self.give_back()

"""Turns: how many request threads of one process run at once, in arrival order.

Python runs one thread at a time. With dozens of request threads in flight each ran a little
at a time, handing the interpreter lock over at every statement, so every call's latency grew
with all the others' work and a write's tail reached seconds. A few turns let each call finish
in about its own time while the rest wait, first come first served.

A thread that waits on a runtime (a cluster's API, the Docker engine) steps out of its turn for
the wait, so a slow cluster cannot hold database work behind it. It comes back without queueing,
over the limit if need be: it may hold row locks that the threads in the turns wait for.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from core.metrics import TURN_WAIT_SECONDS, TURNS_WAITING

T = TypeVar("T")

_current = threading.local()  # the Turns whose turn this thread holds, if any


class Turns:
    """At most `size` threads at once (those back from a runtime aside), in arrival order."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._free = size  # below zero: threads back from a runtime, over the limit
        self._waiting: deque[threading.Event] = deque()

    @property
    def waiting(self) -> int:
        """How many threads wait for a turn."""
        with self._lock:
            return len(self._waiting)

    @property
    def running(self) -> int:
        """How many threads hold a turn."""
        with self._lock:
            return self.size - self._free

    def run(self, work: Callable[[], T]) -> T:
        """Run `work` in a turn (waiting for one first; a thread already in one keeps it)."""
        if getattr(_current, "turns", None) is self:
            return work()  # queueing behind itself would wait forever
        waited = self._take()
        _current.turns = self
        try:
            TURN_WAIT_SECONDS.observe(waited)  # in here: the turn is given back if it raises
            return work()
        finally:
            _current.turns = None
            self._give()

    def _take(self) -> float:
        """Wait for a turn, in arrival order; how many seconds it waited."""
        mine: threading.Event | None = None
        with self._lock:
            if self._free > 0 and not self._waiting:
                self._free -= 1
            else:
                mine = threading.Event()
                self._waiting.append(mine)
        if mine is None:
            return 0.0
        started = time.monotonic()
        try:
            TURNS_WAITING.inc()
            try:
                mine.wait()  # the thread leaving hands its turn over
            finally:
                TURNS_WAITING.dec()
        except BaseException:  # interrupted: leave the queue, or pass on a turn handed over
            with self._lock:
                queued = mine in self._waiting
                if queued:
                    self._waiting.remove(mine)
            if not queued:
                self._give()
            raise
        return time.monotonic() - started

    def _give(self) -> None:
        with self._lock:
            if self._free < 0 or not self._waiting:
                self._free += 1
            else:
                self._waiting.popleft().set()


def holding() -> bool:
    """Whether this thread holds a turn (of any Turns)."""
    return getattr(_current, "turns", None) is not None


@contextmanager
def stepped_out(*, holds_nothing: bool = False) -> Iterator[None]:
    """Give this thread's turn back for a slow wait outside the database; take it back after.

    It comes back at once, over the limit if need be: it may hold row locks that the threads
    in their turns wait for. One that `holds_nothing` (no transaction open: an LLM planner
    waiting on its model) queues again in arrival order instead.
    """
    turns: Turns | None = getattr(_current, "turns", None)
    if turns is None:
        yield
        return
    _current.turns = None
    try:
        turns._give()
        yield
    finally:
        if holds_nothing:
            try:
                waited = turns._take()
            except BaseException:  # interrupted while queued: `run` gives back the turn it
                with turns._lock:  # believes this thread holds, so hold one
                    turns._free -= 1
                _current.turns = turns
                raise
            _current.turns = turns
            TURN_WAIT_SECONDS.observe(waited)  # held: `run` gives it back if this raises
        else:
            with turns._lock:
                turns._free -= 1
            _current.turns = turns

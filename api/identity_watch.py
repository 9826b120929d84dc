"""Open sockets follow their credential: a revoked or expired token closes them, a changed
role applies to their next action. One thread re-checks every watched token in one batched
read per interval (any replica's change is seen: the database is the truth); a change made
through this process pokes it, so it applies at once."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from core.identity.tokens import credentials_for
from core.permissions import Actor

log = logging.getLogger(__name__)

OnChange = Callable[[Actor | None], None]


@dataclass(eq=False)
class _Watched:
    token_id: int
    actor: Actor
    on_change: OnChange


def same_identity(a: Actor, b: Actor) -> bool:
    """Whether two actors are the same user with the same grants."""
    return a.user_id == b.user_id and a.name == b.name and dict(a.grants) == dict(b.grants)


class IdentityWatch:
    """Calls `on_change(actor)` when a watched token's roles change, `on_change(None)` once
    when it is revoked or expires."""

    def __init__(self, reads: sessionmaker[Session], interval: float) -> None:
        self._reads = reads
        self._interval = interval
        self._watched: set[_Watched] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shipdeck-identity", daemon=True)
        self._thread.start()

    def watch(self, token_id: int, actor: Actor, on_change: OnChange) -> Callable[[], None]:
        """Follow a token; returns the function that stops following it."""
        watched = _Watched(token_id, actor, on_change)
        with self._lock:
            self._watched.add(watched)

        def unwatch() -> None:
            with self._lock:
                self._watched.discard(watched)

        return unwatch

    def poke(self) -> None:
        """Re-check now (a token or a role just changed in this process)."""
        self._wake.set()

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.check()
            except Exception:  # a database hiccup must not stop the watch
                log.warning("identity re-check failed; retrying", exc_info=True)

    def check(self) -> None:
        """Re-check every watched token once."""
        with self._lock:
            watched = list(self._watched)
        if not watched:
            return
        with self._reads() as session:
            current = credentials_for(session, {w.token_id for w in watched})
        for item in watched:
            credential = current.get(item.token_id)
            if credential is None:
                with self._lock:
                    if item not in self._watched:
                        continue
                    self._watched.discard(item)
                item.on_change(None)
            elif not same_identity(credential.actor, item.actor):
                item.actor = credential.actor
                item.on_change(credential.actor)

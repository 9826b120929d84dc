"""The hub: who is connected, and what each live event means for their chat.

- approval requested (or the next step reached): an approval card for every eligible
  approver, pushed to all their open sessions;
- a release changed state: cards it made pointless are closed everywhere, the requester and
  every card holder get a `release_update`; a chat release that became approved gets an apply
  card for its requester (unless the target applies on approval);
- progress while applying: a `release_update` with the line, for the requester.

Events are handled one at a time on the hub's own thread, never inside the committing caller.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from agent.cards import apply_card, approval_cards, card_view, release_view, settle
from agent.models import ChatCard
from core.events import EventBus, LiveEvent
from core.identity.models import User
from core.identity.service import actor_for
from core.ids import parse_release_id
from core.permissions import Action
from core.releases.models import Release

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Outbox:
    """One open connection: its user and a thread-safe way to send it a frame."""

    user_id: int
    session_id: str
    send: Callable[[dict[str, Any]], None]
    frames_sent: int = field(default=0)


class Hub:
    """Connected sessions by user, fed by the core's live events."""

    def __init__(self, sessions: sessionmaker[Session], bus: EventBus) -> None:
        self._sessions = sessions
        self._outboxes: dict[int, set[Outbox]] = {}
        self._lock = threading.Lock()
        self._events: queue.Queue[LiveEvent | threading.Event | None] = queue.Queue()
        self._unsubscribe = bus.subscribe(self._events.put)
        self._worker = threading.Thread(target=self._run, name="shipdeck-hub", daemon=True)
        self._worker.start()

    def register(self, outbox: Outbox) -> None:
        """Start delivering to a connection."""
        with self._lock:
            self._outboxes.setdefault(outbox.user_id, set()).add(outbox)

    def unregister(self, outbox: Outbox) -> None:
        """Stop delivering to a connection."""
        with self._lock:
            self._outboxes.get(outbox.user_id, set()).discard(outbox)

    def push(self, user_id: int, frame: dict[str, Any]) -> None:
        """Send a frame to every open session of a user."""
        with self._lock:
            targets = list(self._outboxes.get(user_id, ()))
        for outbox in targets:
            try:
                outbox.send(frame)
                outbox.frames_sent += 1
            except Exception:  # a closing socket must not stop the fan-out
                log.debug("dropping frame for a closed session", exc_info=True)

    def connected(self, user_id: int) -> int:
        """How many sessions a user has open."""
        with self._lock:
            return len(self._outboxes.get(user_id, ()))

    def drain(self, timeout: float = 10) -> None:
        """Wait until every event queued so far is handled (tests, benchmarks)."""
        done = threading.Event()
        self._events.put(done)
        done.wait(timeout)

    def close(self) -> None:
        """Stop listening and let the worker finish."""
        self._unsubscribe()
        self._events.put(None)
        self._worker.join(timeout=10)

    def _run(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            if isinstance(event, threading.Event):
                event.set()
                continue
            try:
                self._handle(event)
            except Exception:  # one bad event must not stop the hub
                log.exception("hub failed on %s", event.kind)

    def _handle(self, event: LiveEvent) -> None:
        number = parse_release_id(event.release_id)
        update = {
            "type": "release_update",
            "release_id": event.release_id,
            "lifecycle_state": event.lifecycle_state,
            "project": event.project,
            "environment": event.environment,
            "action": event.data.get("action"),
            "actor": event.data.get("actor"),
            # Why it moved, when core says (a ticket that timed out, a rejection, a failure).
            "reason": event.data.get("reason"),
        }
        with self._sessions() as session:
            release = session.get(Release, number)
            if release is None:
                return
            requester = release.requested_by_id
            if event.kind == "progress":
                update["message"] = event.data.get("message")
                update["service"] = event.data.get("service")
                update["level"] = event.data.get("level")
                if _can_see(session, requester, release.project_id):
                    self.push(requester, update)
                return
            pushes: list[tuple[int, dict[str, Any]]] = []
            for card in settle(session, number):  # e.g. step 1's approvers, once it is done
                view = card_view(session, card)
                pushes.append((card.user_id, {"type": "card", "card": view}))
            if event.kind == "approval_requested":
                shared = release_view(session, number)  # one read for every approver's card
                for card in approval_cards(session, number):
                    view = card_view(session, card, shared)
                    pushes.append((card.user_id, {"type": "card", "card": view}))
            elif self._wants_apply_card(release, event):
                applying = apply_card(session, release)
                if applying is not None:
                    view = card_view(session, applying)
                    pushes.append((requester, {"type": "card", "card": view}))
            holders = set(
                session.scalars(select(ChatCard.user_id).where(ChatCard.release_number == number))
            )
            # Whoever holds a card or asked for the release, only users who can see its project
            # now hear of it (a role removed since, a card made before the rule).
            seeing = {
                user_id
                for user_id in {requester} | holders | {u for u, _ in pushes}
                if _can_see(session, user_id, release.project_id)
            }
            session.commit()
        for user_id in sorted(seeing & ({requester} | holders)):
            self.push(user_id, update)
        for user_id, frame in pushes:
            if user_id in seeing:
                self.push(user_id, frame)

    @staticmethod
    def _wants_apply_card(release: Release, event: LiveEvent) -> bool:
        if event.lifecycle_state != "approved" or release.lifecycle_state != "approved":
            return False
        return release.channel == "chat" and not release.target.apply_on_approval


def _can_see(session: Session, user_id: int, project_id: int) -> bool:
    """Whether the user has any role on the project now."""
    user = session.get(User, user_id)
    return user is not None and actor_for(user).can(Action.view, project_id)

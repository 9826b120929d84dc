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

import itertools
import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from sqlalchemy import bindparam, exists, select
from sqlalchemy.orm import Session, lazyload, sessionmaker

from agent.cards import (
    OpenCard,
    apply_card,
    approval_cards,
    card_view,
    open_cards,
    release_view,
    settle,
)
from agent.models import ChatCard
from core.db import retrying, utcnow
from core.events import EventBus, LiveEvent
from core.identity.tokens import grants_of
from core.ids import parse_release_id
from core.metrics import HUB_EVENT_SECONDS
from core.permissions import Action, Actor, Channel
from core.releases.models import Release

log = logging.getLogger(__name__)


class Shared(dict[str, Any]):
    """A frame going to many sessions: encoded to JSON once, by whichever writer sends first."""

    _text: str | None = None

    @property
    def text(self) -> str:
        """The frame as a JSON text frame."""
        if self._text is None:
            self._text = json.dumps(self, ensure_ascii=False, default=str)
        return self._text


def encode(frame: dict[str, Any]) -> str:
    """The JSON text of a frame (a shared frame's cached text)."""
    if isinstance(frame, Shared):
        return frame.text
    return json.dumps(frame, ensure_ascii=False, default=str)


Item = LiveEvent | threading.Event | None
# Built once: every pass reads the release and its cards. The requester's user row (and its
# grants) is not needed: `_seeing` reads grants.
_RELEASE = (
    select(Release)
    .where(Release.number == bindparam("number"))
    .options(lazyload(Release.requested_by))
)
_CARDS_OF = select(ChatCard).where(ChatCard.release_number == bindparam("number"))
_ANY_OPEN_CARD = select(
    exists().where(ChatCard.release_number == bindparam("number"), ChatCard.state == "open")
)
GROUP = 50  # most events of one release handled in one pass
ASKING = "approval_requested"  # the event kind that opens approval cards
AHEAD = 10  # most passes in a row that go before the oldest queued news


class Lanes:
    """The hub's queue: events in arrival order, except that the sweeper's expiries wait while
    people's events are handled, and a release asking people to decide goes before other
    releases' news.

    A sweep may expire hundreds of releases at once (after a restart, say); handled first come
    first served, a card fan-out queued behind them would wait for seconds. A superseding
    submit cancels the older release first: its update to every holder of the older cards
    would go before the new approval cards. A release's own events keep their order: its
    waiting expiries are handled just before its next event. Markers (`drain`, close) queue
    behind everything already queued. Under a stream of approval requests the oldest news
    waits for at most `AHEAD` passes.
    """

    def __init__(self) -> None:
        self._ready = threading.Condition()
        self._now: deque[tuple[int, Item]] = deque()
        self._later: deque[tuple[int, Item]] = deque()
        self._arrivals = itertools.count()
        self._ahead = 0  # passes that went before the oldest event of `_now` in a row
        self._asks: deque[tuple[int, str]] = deque()  # the approval requests in `_now`

    def put(self, item: Item) -> None:
        """Queue an event or a marker (thread-safe)."""
        later = not isinstance(item, LiveEvent) or item.data.get("action") == "expire"
        with self._ready:
            arrival = next(self._arrivals)
            (self._later if later else self._now).append((arrival, item))
            if not later and isinstance(item, LiveEvent) and item.kind == ASKING:
                self._asks.append((arrival, item.release_id))
            self._ready.notify()

    def take(self) -> list[Item]:
        """The next items to handle, in order (blocks until there is one)."""
        with self._ready:
            while not self._now and not self._later:
                self._ready.wait()
            if not self._now:
                return [self._later.popleft()[1]]
            start = self._lead() if self._ahead < AHEAD else 0
            self._ahead = self._ahead + 1 if start else 0
            arrived, event = self._pop(start)
            assert isinstance(event, LiveEvent)
            # Only what arrived before it: an expiry queued after this event stays after it.
            first = [
                (n, e)
                for n, e in self._later
                if n < arrived and isinstance(e, LiveEvent) and e.release_id == event.release_id
            ]
            for entry in first:
                self._later.remove(entry)
            taken: list[Item] = [*(e for _, e in first), event]
            # The release's next events queued right behind it are handled in the same pass
            # (a submit's update and its approval request: one transaction, one read of the
            # release), unless one of its expiries arrived between them.
            while len(taken) < GROUP and start < len(self._now):
                arrived, following = self._now[start]
                if not isinstance(following, LiveEvent) or following.release_id != event.release_id:
                    break
                if any(
                    n < arrived and isinstance(e, LiveEvent) and e.release_id == event.release_id
                    for n, e in self._later
                ):
                    break
                self._pop(start)
                taken.append(following)
            return taken

    def _pop(self, index: int) -> tuple[int, Item]:
        arrival, event = self._now[index]
        del self._now[index]
        if isinstance(event, LiveEvent) and event.kind == ASKING:
            self._asks.remove((arrival, event.release_id))
        return arrival, event

    def _lead(self) -> int:
        """Where in `_now` the next pass starts: at the first event of the first release asking
        for decisions (the people it asks wait on no other release's news), else the front."""
        if not self._asks:
            return 0  # nothing to look for: no walk through a long queue
        asking = self._asks[0][1]
        return next(
            i
            for i, (_, e) in enumerate(self._now)
            if isinstance(e, LiveEvent) and e.release_id == asking
        )


@dataclass
class _Moved:
    """What one event did to its release's cards."""

    closed: list[ChatCard] = field(default_factory=list)
    approvals: bool = False  # the open approval cards are pushed
    apply: bool = False  # the requester's open apply card is pushed
    owners: set[int] = field(default_factory=set)  # whose cards closed or opened


@dataclass
class _Pass:
    """What a pass wrote: the release's events and whom they concern."""

    number: int
    project_id: int
    requester: int
    before: set[int]  # who held a card of the release before the pass
    steps: list[tuple[dict[str, Any], _Moved | None]]

    @property
    def concerned(self) -> set[int]:
        """Everyone a frame of the pass may go to."""
        owners = {user for _, moved in self.steps if moved for user in moved.owners}
        return {self.requester} | self.before | owners


@dataclass(eq=False)
class Outbox:
    """One open connection: its user and a thread-safe way to send it a frame."""

    user_id: int
    session_id: str
    send: Callable[[dict[str, Any]], None]
    frames_sent: int = field(default=0)


class Hub:
    """Connected sessions by user, fed by the core's live events."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        bus: EventBus,
        reads: sessionmaker[Session] | None = None,
    ) -> None:
        self._sessions = sessions
        self._reads = reads or sessions  # what telling sessions reads needs no write lock
        self._outboxes: dict[int, set[Outbox]] = {}
        self._lock = threading.Lock()
        self._events = Lanes()
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

    def forget(self) -> None:
        """Drop every connection (a test's world is wiped: its user ids will be reused)."""
        with self._lock:
            self._outboxes.clear()

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
            items = self._events.take()
            events = [e for e in items if isinstance(e, LiveEvent)]
            if events:
                try:
                    self._handle(events)
                except Exception:  # one bad event must not stop the hub
                    log.exception("hub failed on %s", ", ".join(e.kind for e in events))
                now = utcnow()
                for event in events:
                    HUB_EVENT_SECONDS.observe(_age(event, now))
            for item in items:
                if item is None:
                    return
                if isinstance(item, threading.Event):
                    item.set()

    def _handle(self, events: list[LiveEvent]) -> None:
        """Events of one release, in order: what they mean for its cards is written in one
        transaction; if anyone concerned is connected here, they are told after the commit.

        A fixed number of statements however many cards open or close. With nobody concerned
        connected to this process (most events, on most replicas) only the card writes run,
        and a pass with no card to write only finds that out.
        """
        if all(e.kind == "progress" for e in events) and not self._anyone():
            return  # progress goes to the requester's open sessions alone
        what = f"hub: {', '.join(e.kind for e in events)} of {events[0].release_id}"
        if retrying(partial(self._nothing_to_do, events), what=what):
            return
        # Card writes the database rolled back (a deadlock with another replica's hub or a
        # card click) are handled again: dropped, the cards never open.
        written = retrying(partial(self._write, events), what=what)
        if written is None:
            return
        # Asked after the commit: a session that opens later reads the committed cards itself.
        # Then everyone concerned is told, as before: whoever registers while the frames are
        # built gets them too.
        if self._listening(written.concerned):
            # Frames are pushed after the read transaction: a retry sends nothing twice.
            retrying(partial(self._tell, written), what=f"{what}, telling")

    def _nothing_to_do(self, events: list[LiveEvent]) -> bool:
        """Whether these events can neither open nor close a card, nor reach anyone here.

        Most passes on a busy server (a release previewed, one cancelled by a newer submit):
        no one is connected to this process, none of the events opens cards, and the release
        has no open card to close. One indexed read answers that; the pass it spares read
        the release and its cards in a transaction (half of the hub's statements at load).
        """
        if self._anyone() or any(_may_open_cards(e) for e in events):
            return False
        number = parse_release_id(events[0].release_id)
        with self._reads() as session:
            return not session.scalar(_ANY_OPEN_CARD, {"number": number})

    def _write(self, events: list[LiveEvent]) -> _Pass | None:
        """Open and close the release's cards as its events say (one transaction)."""
        number = parse_release_id(events[0].release_id)
        # Per event: its update frame and what it did to cards (None: progress, requester only).
        steps: list[tuple[dict[str, Any], _Moved | None]] = []
        with self._sessions() as session:
            release = session.scalars(_RELEASE, {"number": number}).first()
            if release is None:
                return None
            held: list[ChatCard] | None = None  # the release's cards before this pass
            for event in events:
                update = _update(event)
                if event.kind == "progress":
                    update["message"] = event.data.get("message")
                    update["service"] = event.data.get("service")
                    update["level"] = event.data.get("level")
                    steps.append((update, None))
                    continue
                moved = _Moved()
                if held is None:
                    held = list(session.scalars(_CARDS_OF, {"number": number}))
                    # Once a pass: the release's state is read once, so a second look at the
                    # same cards would close nothing more.
                    moved.closed = settle(session, release, held)  # e.g. step 1's approvers
                    moved.owners.update(card.user_id for card in moved.closed)
                if event.kind == ASKING:
                    moved.owners |= approval_cards(session, release)
                    moved.approvals = True
                elif self._wants_apply_card(release, event):
                    moved.owners.add(apply_card(session, release))
                    moved.apply = True
                steps.append((update, moved))
            session.commit()
            return _Pass(
                number,
                release.project_id,
                release.requested_by_id,
                {card.user_id for card in held or ()},
                steps,
            )

    def _tell(self, done: _Pass) -> None:
        """Push a pass's frames to the sessions open here."""
        number, requester, steps = done.number, done.requester, done.steps
        with self._reads() as session:
            # Only users who can see the project now hear of it (a role removed since, a card
            # made before the rule).
            seeing = _seeing(session, done.concerned, done.project_id)
            if not seeing:
                return
            opened: dict[str, list[OpenCard]] = {}
            if any(moved and moved.approvals for _, moved in steps):
                opened["approval"] = open_cards(session, number, kind="approval", users=seeing)
            if any(moved and moved.apply for _, moved in steps) and requester in seeing:
                confirmations = open_cards(session, number, kind="confirmation", users=[requester])
                opened["apply"] = [c for c in confirmations if c.tool == "apply_release"]
            pushed: list[list[ChatCard | OpenCard]] = []
            for _, moved in steps:
                if moved is not None:
                    cards: list[ChatCard | OpenCard] = [
                        c for c in moved.closed if c.user_id in seeing
                    ]
                    cards += opened.get("approval", []) if moved.approvals else []
                    cards += opened.get("apply", []) if moved.apply else []
                    pushed.append(cards)
            shared = release_view(session, number) if any(pushed) else {}
            views = {c.id: card_view(session, c, shared) for cards in pushed for c in cards}
            session.commit()
        holders = set(done.before)
        moves = iter(pushed)
        for update, moved in steps:
            if moved is None:
                if requester in seeing:
                    self.push(requester, update)
                continue
            cards = next(moves)
            holders |= {card.user_id for card in cards}  # as the table stood after this event
            told = Shared(update)  # serialised once for every session it goes to
            for user_id in sorted(seeing & ({requester} | holders)):
                self.push(user_id, told)
            for card in cards:
                self.push(card.user_id, Shared({"type": "card", "card": views[card.id]}))

    def _anyone(self) -> bool:
        with self._lock:
            return any(self._outboxes.values())

    def _listening(self, users: set[int]) -> bool:
        """Whether any of `users` has a session open on this process."""
        with self._lock:
            return any(self._outboxes.get(u) for u in users)

    @staticmethod
    def _wants_apply_card(release: Release, event: LiveEvent) -> bool:
        if event.lifecycle_state != "approved" or release.lifecycle_state != "approved":
            return False
        return release.channel == "chat" and not release.target.apply_on_approval


def _may_open_cards(event: LiveEvent) -> bool:
    """Whether the event may open cards: approval cards, or a chat release's apply card."""
    return event.kind == ASKING or event.lifecycle_state == "approved"


def _age(event: LiveEvent, now: datetime) -> float:
    """Seconds since the event's change; never below 0 (another replica's clock may run
    ahead), and a time without a zone is UTC's (as every replica writes it)."""
    at = event.at if event.at.tzinfo is not None else event.at.replace(tzinfo=UTC)
    return max(0.0, (now - at).total_seconds())


def _update(event: LiveEvent) -> dict[str, Any]:
    """The `release_update` frame of an event."""
    return {
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


def _seeing(session: Session, user_ids: set[int], project_id: int) -> set[int]:
    """Those of `user_ids` who have any role on the project now (one statement)."""
    if not user_ids:
        return set()
    return {
        user_id
        for user_id, held in grants_of(session, user_ids).items()
        if Actor(user_id, "", held, Channel.system).can(Action.view, project_id)
    }

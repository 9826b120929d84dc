"""One chat session: frames in, frames out, over whatever transport carries them.

Read tools run at once. A preview (or a rollback preview) runs at once too, since it changes
nothing on the target, and is followed by a confirmation card whose `confirm` submits it. Any
other mutating call becomes a confirmation card and runs only on its owner's `confirm`. Every
call runs as the user, on the chat channel, through the one tool registry: core decides.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from agent.cards import PREVIEW_TOOLS, card_view, card_views, confirmation_card
from agent.catalog import catalog_at
from agent.frames import CardAction, UserMessage, error_frame
from agent.history import LAST_FRAMES, Window, append
from agent.language import reply_language, say
from agent.models import ChatCard
from agent.models import ChatSession as ChatSessionRow
from agent.planner import Catalog, PlanContext, Planner, ToolCall
from agent.summaries import summarize
from core.db import AnyRow, plain_rows, utcnow
from core.errors import ShipdeckError
from core.ids import parse_release_id
from core.permissions import Action, Actor, Channel
from core.releases.models import Release
from core.releases.queries import missing_release
from tools.base import Tool, ToolContext
from tools.registry import REGISTRY
from tools.visibility import conceal, hidden_releases

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ChatDeps:
    """What sessions need: the database, tool contexts and the planner."""

    sessions: sessionmaker[Session]
    context: Callable[[Actor], ToolContext]
    planner: Planner
    # Most releases or cards one chat message may create, whatever the planner proposes.
    max_cards: int = 5
    # The IANA zone chat reads and shows people's times in (SHIPDECK_TIMEZONE, else the server's).
    timezone: str = "UTC"
    # The time people's times are read against (evals pin it so expected times never move).
    clock: Callable[[], datetime] = utcnow
    # Sessions for what a turn only reads (catalog, history); on SQLite no write lock.
    reads: sessionmaker[Session] | None = None


class ChatSession:
    """The conversation of one user in one session id."""

    def __init__(self, deps: ChatDeps, actor: Actor, session_id: str, send: Send) -> None:
        self.deps = deps
        self.actor = actor
        self.session_id = session_id
        self._send = send
        self._unrecorded: list[tuple[str, dict[str, Any]]] = []
        self.lang = "en"  # of the user's last message, or of their console when it says
        # What the last message actually did: calls run and calls turned into cards, in order.
        self.turn_calls: list[ToolCall] = []
        self.turn_reads: dict[str, dict[str, Any]] = {}  # reads a planner ran this turn
        # The read session the door opened for the frame being handled (see `handle`).
        self._reading: Session | None = None
        self._probe: AnyRow | None = None
        self.window = Window(session_id)  # what its planner sees of the conversation

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls, deps: ChatDeps, actor: Actor, send: Send, session_id: str | None = None
    ) -> ChatSession:
        """Resume the user's session `session_id` (history replayed) or start a new one."""
        written: list[tuple[int, dict[str, Any]]] = []
        with deps.sessions() as session:
            row = session.get(ChatSessionRow, session_id) if session_id else None
            if row is None or row.user_id != actor.user_id:
                row = ChatSessionRow(
                    id=uuid.uuid4().hex[:16], user_id=actor.user_id, planner=deps.planner.name
                )
                session.add(row)
            else:
                rows = plain_rows(session, LAST_FRAMES, {"session_id": row.id})
                written = [(r.id, r.frame) for r in reversed(rows)]
            row.last_active_at = utcnow()
            session.commit()
            chat = cls(deps, actor, row.id, send)
            chat.window.fill(written)
            # A card whose release the user can no longer see (role removed) stays closed to
            # them. A fixed number of statements however many cards are open.
            cards = session.execute(
                select(ChatCard, Release.project_id)
                .outerjoin(Release, Release.number == ChatCard.release_number)
                .where(ChatCard.user_id == actor.user_id, ChatCard.state == "open")
                .order_by(ChatCard.created_at)
            ).all()
            views = card_views(
                session,
                (
                    card
                    for card, project_id in cards
                    if card.release_number is None
                    or (project_id is not None and actor.can(Action.view, project_id))
                ),
            )
        send(
            {
                "type": "session",
                "session_id": chat.session_id,
                "planner": deps.planner.name,
                "user": actor.name,
                "history": [frame for _, frame in written],
            }
        )
        for view in views:
            send({"type": "card", "card": view})
        return chat

    def send(self, frame: dict[str, Any], *, record: bool = True) -> None:
        """Send a frame to the client; it joins the history when the turn ends."""
        if record:
            self._record("out", frame)
        if frame["type"] == "assistant_message":
            # The turn's last frame: its history is written before the client can see the turn
            # end (and, say, reconnect and ask for the history).
            self._flush()
        self._send(frame)

    def _record(self, direction: str, frame: dict[str, Any]) -> None:
        self._unrecorded.append((direction, frame))

    def _flush(self) -> None:
        """Write the turn's frames to the history, all of them or none."""
        if not self._unrecorded:
            return
        pending, self._unrecorded = self._unrecorded, []
        append(self.deps.sessions, self.session_id, pending)
        self.window.wrote([frame for _, frame in pending])

    # ------------------------------------------------------------------ frames

    def handle(
        self, frame: dict[str, Any], reading: Session | None = None, probe: AnyRow | None = None
    ) -> None:
        """Handle one client frame (already parsed JSON).

        `reading`: a read session the door opened for this frame (the socket re-checks the
        token in it). A message's plan inputs are read in it too, in the same transaction;
        `handle` closes it, before anything else of the frame opens a connection (one
        connection per request thread: a turn never holds two). `probe`: the window's
        `PROBE_COLUMNS`, read in `reading` with the door's own statement.
        """
        self._reading, self._probe = reading, probe
        try:
            if frame.get("type") != "user_message":
                self._close_reading()
            self._handle(frame)
        finally:
            self._close_reading()
            self._flush()

    def _close_reading(self) -> None:
        self._probe = None
        if self._reading is not None:
            reading, self._reading = self._reading, None
            reading.close()

    def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        try:
            if kind == "user_message":
                message = UserMessage.model_validate(frame)
                self._record("in", frame)
                self._message(message.text, message.lang)
            elif kind == "card_action":
                action = CardAction.model_validate(frame)
                self._record("in", frame)
                if action.lang is not None:
                    self.lang = action.lang
                self._card_action(action)
            elif kind == "ping":
                self.send({"type": "pong"}, record=False)
            else:
                self.send(
                    error_frame("unknown_type", f"unknown message type {kind!r}"), record=False
                )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            self.send(error_frame("invalid_message", problems), record=False)

    def _actor(self) -> Actor:
        return self.actor.via(Channel.chat, uuid.uuid4().hex)

    def _plan_inputs(self) -> tuple[Catalog, list[dict[str, str]]]:
        """The catalog and what was said before, read in the door's read-only transaction if
        it opened one for this frame; closed before planning starts."""
        session, self._reading = self._reading, None
        probe, self._probe = (self._probe, None) if session is not None else (None, None)
        with session or (self.deps.reads or self.deps.sessions)() as session:
            token = self.window.catch_up(session, probe)
            return catalog_at(session, self.actor, token), self.window.messages()

    def _say(self, text: str, streamed: str = "") -> None:
        if text and streamed.strip():
            text = "\n\n" + text  # streamed prose and the card summary are two paragraphs
        message = {"type": "assistant_message", "text": (streamed.rstrip() + text).strip()}
        # The history, this reply included, is written before the reply's last delta is sent:
        # the turn's two last frames then leave back to back (one hand-over to the socket).
        self._record("out", message)
        self._flush()
        if text:
            self.send({"type": "assistant_delta", "text": text}, record=False)
        self._send(message)

    def _message(self, text: str, chosen: str | None = None) -> None:
        actor = self._actor()
        self.lang = reply_language(text, chosen)
        self.turn_calls = []
        self.turn_reads = {}
        streamed: list[str] = []

        def delta(piece: str) -> None:
            streamed.append(piece)
            self.send({"type": "assistant_delta", "text": piece}, record=False)

        catalog, history = self._plan_inputs()
        context = PlanContext(
            catalog=catalog,
            user=self.actor.name,
            history=history,
            run_read=lambda call: self._read(actor, call),
            emit_delta=delta,
            timezone=self.deps.timezone,
            now=self.deps.clock(),
            lang=self.lang,
        )
        try:
            result = self.deps.planner.plan(text, context)
        except Exception:  # a planner failure is a chat message, never a dropped connection
            log.exception("planner %s failed", self.deps.planner.name)
            self.send(error_frame("planner_failed", say("planner_failed", self.lang)))
            return
        lines = [result.reply] if result.reply else []
        if result.clarify:
            self._say("\n".join([*lines, result.clarify]), "".join(streamed))
            return
        budget = self.deps.max_cards
        for call in result.calls:
            tool = REGISTRY.get(call.tool)
            if tool is not None and tool.mutating:
                if budget <= 0:  # a runaway or hostile plan: the rest is dropped, and said so
                    lines.append(say("card_limit", self.lang, limit=self.deps.max_cards))
                    break
                budget -= 1
            lines.append(self._dispatch(actor, call, confirm_previews=result.confirm_previews))
        self._say("\n".join(line for line in lines if line), "".join(streamed))

    def _dispatch(self, actor: Actor, call: ToolCall, *, confirm_previews: bool = False) -> str:
        tool = REGISTRY.get(call.tool)
        if tool is None:
            self.send(error_frame("unknown_tool", f"there is no tool {call.tool!r}"))
            return ""
        if not tool.mutating:
            # A planner that read this already while planning ("why did R-4 fail?" reads R-4 to
            # find its target) gets that answer again instead of a second call.
            result = self.turn_reads.get(_read_key(call))
            if result is None:
                self.turn_calls.append(call)
                result = self._run(actor, call)
            return summarize(call.tool, result, self.lang) if "error" not in result else ""
        self.turn_calls.append(call)
        if call.tool in PREVIEW_TOOLS and not confirm_previews:
            return self._preview(actor, call)
        refusal = self._refusal(tool, call.args)
        if refusal is not None:
            self.send(error_frame(refusal.code, refusal.message, **_jsonable(refusal.details)))
            return ""
        card = self._card(call.tool, call.args)
        if call.tool in PREVIEW_TOOLS:
            return say("confirm_preview", self.lang)
        return say("confirm_run", self.lang, tool=call.tool, what=card)

    def _preview(self, actor: Actor, call: ToolCall) -> str:
        """Run a preview now and offer its submit card."""
        result = self._run(actor, call)
        if "error" in result:
            return ""
        card = self._card("submit_release", {"release_id": result["id"]})
        note = say("confirm_submit", self.lang, release=card)
        return f"{summarize(call.tool, result, self.lang)} {note}"

    def _refusal(self, tool: Tool[Any, Any], args: dict[str, Any]) -> ShipdeckError | None:
        """Why no card may be proposed: bad arguments, or a release the user cannot see.

        A card shows its release's diff and brings live updates, so it is only ever made for a
        release the user could read anyway; a hidden one is answered like a nonexistent one.
        """
        try:
            parsed = tool.parse(args)
            with self.deps.sessions() as session:
                conceal(session, self.actor, parsed)
                hidden = hidden_releases(session, self.actor, getattr(parsed, "release_ids", []))
        except ShipdeckError as exc:
            return exc
        if hidden:
            return missing_release(parse_release_id(sorted(hidden)[0]))
        return None

    def _read(self, actor: Actor, call: ToolCall) -> dict[str, Any]:
        """What planners may run themselves: read tools only, whatever they ask for."""
        tool = REGISTRY.get(call.tool)
        if tool is None or tool.mutating:
            message = f"{call.tool} is not a read tool; mutating calls become cards"
            self.send(error_frame("not_a_read_tool", message))
            return {"error": {"code": "not_a_read_tool", "message": message}}
        self.turn_calls.append(call)
        result = self._run(actor, call)
        self.turn_reads[_read_key(call)] = result
        return result

    def _run(self, actor: Actor, call: ToolCall) -> dict[str, Any]:
        """Run a tool now, streaming its call and result; errors become an error frame."""
        self.send({"type": "tool_call", "tool": call.tool, "args": call.args})
        try:
            output = REGISTRY[call.tool].run(self.deps.context(actor), call.args)
        except ShipdeckError as exc:
            self.send(error_frame(exc.code, exc.message, **_jsonable(exc.details)))
            return {"error": {"code": exc.code, "message": exc.message}}
        result: dict[str, Any] = output.model_dump(mode="json")
        self.send({"type": "tool_result", "tool": call.tool, "result": result})
        return result

    def _card(self, tool: str, args: dict[str, Any]) -> str:
        with self.deps.sessions() as session:
            for attempt in range(2):
                try:
                    # the card's INSERT is flushed here: the duplicate can surface at once
                    card = confirmation_card(
                        session,
                        user_id=self.actor.user_id or 0,
                        session_id=self.session_id,
                        tool=tool,
                        args=args,
                    )
                    view = card_view(session, card)
                    session.commit()
                    break
                except IntegrityError:
                    # The same card was opened meanwhile (another tab, a hub push): the second
                    # pass finds it and shows that one, as asking twice always does.
                    session.rollback()
                    if attempt:
                        raise
        self.send({"type": "card", "card": view})
        return str(view["release_id"] or card.id)

    # ------------------------------------------------------------------ cards

    def _card_action(self, action: CardAction) -> None:
        claimed, frames = self._claim(action)
        # Frames are sent once the session is closed: recording them opens a session of its own.
        for frame in frames:
            self.send(frame)
        if claimed is None:
            return
        kind, tool, args = claimed
        call = self._call_for(kind, tool, args, action)
        state = "done"
        if call is None:
            outcome = "dismissed"
        elif call.tool in PREVIEW_TOOLS:  # a proposed preview, now asked for: run it
            outcome = self._preview(self._actor(), call)
            state = "done" if outcome else "failed"
            outcome = outcome or "the preview failed"
        else:
            result = self._run(self._actor(), call)
            if "error" in result:
                state, outcome = "failed", result["error"]["message"]
            else:
                outcome = summarize(call.tool, result, self.lang)
        with self.deps.sessions() as session:
            card = session.get_one(ChatCard, action.card_id)
            card.state, card.outcome, card.decided_at = state, outcome, utcnow()
            view = card_view(session, card)
            session.commit()
        self.send({"type": "card", "card": view})
        self._say(outcome)

    def _claim(
        self, action: CardAction
    ) -> tuple[tuple[str, str, dict[str, Any]] | None, list[dict[str, Any]]]:
        """Check the card and claim it (of two clicks, one acts); frames to send back."""
        with self.deps.sessions() as session:
            card = session.get(ChatCard, action.card_id)
            if card is None or card.user_id != self.actor.user_id:
                return None, [error_frame("not_found", "no such card")]
            if card.state != "open":
                return None, [
                    error_frame(
                        "card_closed", f"this card is {card.state}: {card.outcome}", card_id=card.id
                    ),
                    {"type": "card", "card": card_view(session, card)},
                ]
            if card.expires_at is not None and card.expires_at <= utcnow():
                card.state, card.outcome = "expired", "the preview expired; re-preview it"
                view = card_view(session, card)
                session.commit()
                return None, [
                    error_frame(
                        "card_expired", "this card expired: re-preview the release", card_id=card.id
                    ),
                    {"type": "card", "card": view},
                ]
            allowed = {"confirmation": ("confirm", "cancel"), "approval": ("approve", "reject")}
            if action.action not in allowed[card.kind]:
                takes = " or ".join(allowed[card.kind])
                return None, [error_frame("invalid_action", f"a {card.kind} card takes {takes}")]
            result = session.execute(
                update(ChatCard)
                .where(ChatCard.id == card.id, ChatCard.state == "open")
                .values(state="running")
            )
            session.commit()
            if result.rowcount != 1:  # type: ignore[attr-defined]
                return None, [error_frame("card_closed", "this card was just decided elsewhere")]
            return (card.kind, card.tool, dict(card.args)), []

    @staticmethod
    def _call_for(
        kind: str, tool: str, args: dict[str, Any], action: CardAction
    ) -> ToolCall | None:
        rid = args.get("release_id")
        if kind == "approval":
            if action.action == "approve":
                return ToolCall(
                    tool="approve_release", args={"release_id": rid, "comment": action.comment}
                )
            return ToolCall(
                tool="reject_release", args={"release_id": rid, "reason": action.comment}
            )
        if action.action == "confirm":
            return ToolCall(tool=tool, args=args)
        if tool == "submit_release":  # declining a previewed release withdraws it
            return ToolCall(
                tool="cancel_release", args={"release_id": rid, "reason": action.comment}
            )
        return None


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(json.dumps(details, default=str)))


def _read_key(call: ToolCall) -> str:
    return json.dumps([call.tool, call.args], sort_keys=True, default=str)

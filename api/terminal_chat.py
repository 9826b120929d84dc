"""`shipdeck chat`: a terminal client for the chat WebSocket.

Type messages as in any chat. Cards are numbered as they arrive; decide them with
`y` / `n` (the newest open card shown in this terminal, named as it is decided: confirm or
approve / cancel or reject) or with
`/confirm N`, `/cancel N`, `/approve N [comment]`, `/reject N [reason]`. `/cards` lists the
open ones, `/quit` leaves.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from typing import Any, TextIO
from urllib.parse import quote, urlsplit, urlunsplit

from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

POSITIVE = {"confirmation": "confirm", "approval": "approve"}
NEGATIVE = {"confirmation": "cancel", "approval": "reject"}


class TerminalChat:
    """Renders frames with rich and turns typed lines into frames."""

    def __init__(self, url: str, token: str, session: str | None, console: Console) -> None:
        self.base = url.rstrip("/")
        self.session = session
        self.token = token
        self.console = console
        self.cards: list[dict[str, Any]] = []  # index + 1 is the card's number
        self.lock = threading.Lock()

    def ticket(self) -> str:
        """A single-use chat ticket: the token itself never goes into a URL."""
        parts = urlsplit(self.base)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        endpoint = urlunsplit((scheme, parts.netloc, parts.path + "/api/v1/chat/tickets", "", ""))
        request = urllib.request.Request(
            endpoint, method="POST", headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return str(json.loads(response.read())["ticket"])
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise PermissionError("the token is unknown, expired or revoked") from None
            raise OSError(f"the server answered {exc.code}") from None

    def chat_url(self, ticket: str) -> str:
        """The socket's URL with a ticket (and the session to resume)."""
        parts = urlsplit(self.base)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        query = f"ticket={quote(ticket)}"
        if self.session:
            query += f"&session={quote(self.session)}"
        return urlunsplit((scheme, parts.netloc, parts.path + "/api/v1/chat", query, ""))

    def run(self, lines: TextIO) -> int:
        """Chat until /quit or end of input; returns an exit code."""
        with connect(self.chat_url(self.ticket())) as ws:
            reader = threading.Thread(target=self._read, args=(ws,), daemon=True)
            reader.start()
            for raw in lines:
                line = raw.strip()
                if not line:
                    continue
                if line == "/quit":
                    break
                frame = self._frame(line)
                if frame is not None:
                    ws.send(json.dumps(frame))
        return 0

    def _frame(self, line: str) -> dict[str, Any] | None:
        if line in ("y", "n"):
            card = self._newest_open()
            if card is None:
                self.console.print("[yellow]no open card[/]")
                return None
            table = POSITIVE if line == "y" else NEGATIVE
            action = table[card["kind"]]
            # Say which card the keystroke decides: never a card this terminal did not show.
            with self.lock:
                number = next(i for i, c in enumerate(self.cards, 1) if c["id"] == card["id"])
                others = sum(1 for c in self.cards if c["state"] == "open") - 1
            more = f" ({others} more open: /cards)" if others > 0 else ""
            self.console.print(
                f"[bold]{line}[/] → {action} #{number} {card.get('title', '')}{more}"
            )
            return {"type": "card_action", "card_id": card["id"], "action": action}
        if line == "/cards":
            self._list_cards()
            return None
        if line.startswith("/"):
            parts = line[1:].split(maxsplit=2)
            if len(parts) >= 2 and parts[0] in ("confirm", "cancel", "approve", "reject"):
                card = self._numbered(parts[1])
                if card is None:
                    return None
                comment = parts[2] if len(parts) > 2 else None
                return {
                    "type": "card_action",
                    "card_id": card["id"],
                    "action": parts[0],
                    "comment": comment,
                }
            self.console.print(
                "[yellow]commands: /confirm N, /cancel N, /approve N [comment], "
                "/reject N [reason], /cards, /quit, or y / n[/]"
            )
            return None
        return {"type": "user_message", "text": line}

    def _numbered(self, text: str) -> dict[str, Any] | None:
        with self.lock:
            if text.lstrip("#").isdigit() and 0 < int(text.lstrip("#")) <= len(self.cards):
                return self.cards[int(text.lstrip("#")) - 1]
        self.console.print(f"[yellow]no card #{text}[/]")
        return None

    def _newest_open(self) -> dict[str, Any] | None:
        """The newest open card shown in this terminal (cards only ever arrive by being shown)."""
        with self.lock:
            return next(
                (c for c in reversed(self.cards) if c["state"] == "open" and c.get("_shown")),
                None,
            )

    def _list_cards(self) -> None:
        table = Table("#", "card", "state")
        with self.lock:
            for number, card in enumerate(self.cards, 1):
                table.add_row(str(number), card.get("title", ""), card["state"])
        self.console.print(table)

    def _read(self, ws: Any) -> None:
        try:
            for text in ws:
                self._render(json.loads(text))
        except ConnectionClosed:
            self.console.print("[red]connection closed[/]")

    def _render(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "session":
            self.console.print(
                f"[dim]session {frame['session_id']} as {frame['user']} "
                f"({frame['planner']} planner)[/]"
            )
        elif kind == "assistant_message":
            self.console.print(f"[bold cyan]shipdeck[/] {frame['text']}")
        elif kind == "tool_call":
            self.console.print(f"[dim]→ {frame['tool']} {json.dumps(frame['args'])}[/]")
        elif kind == "card":
            self._card(frame["card"])
        elif kind == "release_update":
            extra = f" — {frame['message']}" if frame.get("message") else ""
            self.console.print(
                f"[magenta]{frame['release_id']}[/] {frame['lifecycle_state']}{extra}"
            )
        elif kind == "error":
            self.console.print(f"[red]error ({frame['code']}): {frame['message']}[/]")

    def _card(self, card: dict[str, Any]) -> None:
        with self.lock:
            known = next((i for i, c in enumerate(self.cards) if c["id"] == card["id"]), None)
            if known is None:
                self.cards.append(card)
                number = len(self.cards)
            else:
                self.cards[known] = card
                number = known + 1
        if card["state"] != "open":
            self.console.print(f"[dim]card #{number} {card['state']}: {card.get('outcome')}[/]")
            return
        card["_shown"] = True
        lines = [
            f"{service} {field}: {change['before']} → {change['after']}"
            for service, fields in (card.get("diff") or {}).items()
            for field, change in fields.items()
        ]
        risk = (card.get("risk") or {}).get("level", "-")
        body = "\n".join(
            [
                *lines,
                f"risk {risk} · expires {card.get('expires_at')}",
                f"[bold]y[/] {POSITIVE[card['kind']]} · [bold]n[/] "
                f"{NEGATIVE[card['kind']]}  (or /{POSITIVE[card['kind']]} {number})",
            ]
        )
        self.console.print(Panel(body, title=f"#{number} {card.get('title', '')}"))

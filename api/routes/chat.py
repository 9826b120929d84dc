"""The chat door: WebSocket `/api/v1/chat`, JSON text frames (see DESIGN.md).

A socket authenticates with `Authorization: Bearer` on the handshake, with a single-use
ticket (`POST /api/v1/chat/tickets`, then `?ticket=`) where a client cannot set headers
(browsers), or with its first frame, `{"type": "auth", "token" | "ticket": ...}`, sent within
`chat_auth_seconds` of opening; anything else first, or nothing, closes the socket with 1008.
A token in the URL is refused: URLs end up in logs and histories. The socket
follows its token: every action re-reads the token and roles, and an idle socket is closed
within a second of its token being revoked or expiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from functools import cache
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import Select
from starlette.concurrency import run_in_threadpool

from agent.frames import error_frame
from agent.history import PROBE_COLUMNS
from agent.hub import Outbox as HubOutbox
from agent.hub import encode
from agent.session import ChatSession
from api.deps import CredentialDep, ServicesDep, resolve_token
from api.errors import responses
from api.sockets import (
    AUTH_HINT,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    UNKNOWN,
    AuthFrameError,
    Outbox,
    origin_allowed,
    read_auth_frame,
)
from api.wiring import Services
from core.db import plain_rows
from core.errors import NotAuthenticated
from core.identity.schemas import TicketIssued
from core.identity.tokens import (
    Credential,
    consume_ticket,
    credential_for,
    credential_from,
    credential_with,
    issue_ticket,
)
from core.metrics import CHAT_SOCKETS
from core.permissions import Actor

router = APIRouter(tags=["chat"])
log = logging.getLogger(__name__)
CHAT_TICKET = "chat"
REVOKED = "your token was revoked or expired; sign in again"


@router.post(
    "/api/v1/chat/tickets",
    status_code=201,
    responses=responses(401),
)
def create_ticket(services: ServicesDep, credential: CredentialDep) -> TicketIssued:
    """A single-use ticket to open the chat socket (`?ticket=`), valid for a few seconds."""
    with services.sessions() as session:
        ticket, expires_at = issue_ticket(
            session,
            purpose=CHAT_TICKET,
            ttl_seconds=services.settings.chat_ticket_ttl_seconds,
            token_id=credential.token_id,
        )
    return TicketIssued(ticket=ticket, expires_at=expires_at)


def _authenticate(services: Services, websocket: WebSocket) -> Credential | None:
    """The handshake's credential (header or ticket); None: the first frame will say."""
    if "token" in websocket.query_params:
        raise NotAuthenticated(
            "tokens are never accepted in URLs: use a ticket (POST /api/v1/chat/tickets)"
        )
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer ") and header[7:].strip():
        return resolve_token(services, header[7:].strip())
    if "ticket" in websocket.query_params:
        return _redeem(services, websocket.query_params["ticket"])
    return None


def _redeem(services: Services, ticket: str) -> Credential:
    with services.sessions() as session:
        used = consume_ticket(session, ticket, CHAT_TICKET)
        token_id = used.token_id if used is not None else None
    if token_id is None:
        raise NotAuthenticated(UNKNOWN["ticket"])
    return _recheck(services, token_id)


async def _first_frame(services: Services, websocket: WebSocket) -> Credential | None:
    """The credential of the auth frame sent within the deadline; None if the client left."""
    seconds = services.settings.chat_auth_seconds
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout=seconds)
    except TimeoutError:
        raise NotAuthenticated(f"no auth frame within {seconds:g} s: {AUTH_HINT}") from None
    if message["type"] == "websocket.disconnect":
        return None
    try:
        kind, secret = read_auth_frame(message)
    except AuthFrameError as exc:
        raise NotAuthenticated(str(exc)) from None
    if kind == "ticket":
        return await run_in_threadpool(services.in_turn(_redeem, services, secret))
    return await run_in_threadpool(services.in_turn(resolve_token, services, secret))


def _recheck(services: Services, token_id: int) -> Credential:
    with services.reads() as session:
        credential = credential_for(session, token_id)
    if credential is None:
        raise NotAuthenticated(REVOKED)
    return credential


def handle_frame(
    services: Services, chat: ChatSession, token_id: int, frame: dict[str, Any]
) -> str | None:
    """Re-check the token, then handle the frame as its holder; why not, if it was refused.

    Every action runs as the token's holder as of now, not as of the handshake. The check and
    the frame share one worker-thread hop (it was two), and a message reads its plan inputs in
    the check's read transaction.
    """
    session = services.reads()
    try:
        rows = plain_rows(
            session, _recheck_and_probe(), {"token_id": token_id, **chat.window.probing()}
        )
        current = credential_from(rows)
    except BaseException:
        session.close()
        raise
    if current is None:
        session.close()
        return REVOKED
    chat.actor = current.actor
    chat.handle(frame, reading=session, probe=rows[0])  # closes the session
    return None


@cache
def _recheck_and_probe() -> Select[Any]:
    # what a message reads first about its conversation, in the re-check's round trip
    return credential_with(*PROBE_COLUMNS)


@router.websocket("/api/v1/chat")
async def chat(websocket: WebSocket) -> None:
    """Check origin, authenticate (header, ticket or first frame), then relay frames."""
    services: Services = websocket.app.state.services
    settings = services.settings
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, websocket.headers.get("host"), settings.ws_allowed_origins):
        log.warning("chat socket refused: origin %r is not allowed", origin)
        await websocket.close(code=POLICY_VIOLATION, reason="origin not allowed")
        return
    try:
        credential = await run_in_threadpool(services.in_turn(_authenticate, services, websocket))
    except NotAuthenticated as exc:
        await websocket.close(code=POLICY_VIOLATION, reason=exc.message)
        return
    await websocket.accept()
    if credential is None:
        try:
            credential = await _first_frame(services, websocket)
        except NotAuthenticated as exc:
            # Say why in a frame too: not every client shows a close reason.
            frame = error_frame("not_authenticated", exc.message)
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # it may be gone
                await websocket.send_text(json.dumps(frame, ensure_ascii=False))
                await websocket.close(code=POLICY_VIOLATION, reason=exc.message)
            return
        if credential is None:
            return
    outgoing = Outbox(asyncio.get_running_loop(), settings.chat_outgoing_frames)
    send = outgoing.send
    shutting = threading.Event()

    def shut(reason: str) -> None:  # callable from any thread: say why, then close
        if shutting.is_set():
            return
        shutting.set()
        send(error_frame("not_authenticated", reason))
        outgoing.close()

    async def writer() -> None:
        while True:
            frame = await outgoing.next()
            if frame is Outbox.CLOSE:
                await websocket.close(code=POLICY_VIOLATION, reason="not authenticated")
                return
            if frame is Outbox.OVERFLOW:
                log.warning(
                    "chat socket of %s closed: %d frames unread",
                    credential.actor.name,
                    outgoing.limit,
                )
                await websocket.close(code=TRY_AGAIN_LATER, reason="too many unread frames")
                return
            await websocket.send_text(encode(frame))

    writing = asyncio.create_task(writer())
    session = await run_in_threadpool(
        services.in_turn(
            ChatSession.open,
            services.chat,
            credential.actor,
            send,
            websocket.query_params.get("session"),
        )
    )

    def follow(actor: Actor | None) -> None:  # from the identity watch's thread
        if actor is None:
            shut(REVOKED)
        else:
            session.actor = actor

    unwatch = services.watch.watch(credential.token_id, credential.actor, follow)
    outbox = HubOutbox(credential.actor.user_id or 0, session.session_id, send)
    services.hub.register(outbox)
    limit = settings.chat_max_frame_bytes
    CHAT_SOCKETS.inc()
    try:
        while not shutting.is_set():
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:  # a binary frame: answer, never raise
                send(error_frame("binary_frame", "frames are JSON text; binary is not accepted"))
                continue
            if len(text.encode()) > limit:
                send(error_frame("too_large", f"frames are limited to {limit} bytes"))
                continue
            try:
                frame = json.loads(text)
            except ValueError:
                send(error_frame("malformed_json", "the frame is not valid JSON"))
                continue
            if not isinstance(frame, dict):
                send(error_frame("invalid_message", "a frame is a JSON object with a type"))
                continue
            if frame.get("type") == "ping":
                send({"type": "pong"})
                continue
            refused = await run_in_threadpool(
                services.in_turn(handle_frame, services, session, credential.token_id, frame)
            )
            if refused is not None:
                shut(refused)
                break
    except WebSocketDisconnect:
        pass
    except RuntimeError:
        # receiving after our own close (revoked token, overflow) is expected; nothing else is
        if not (shutting.is_set() or outgoing.overflowed):
            raise
    finally:
        CHAT_SOCKETS.dec()
        unwatch()
        services.hub.unregister(outbox)
        if shutting.is_set():  # let the writer say why and close
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writing, timeout=5)
        writing.cancel()

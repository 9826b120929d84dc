"""The chat door: WebSocket `/api/v1/chat`, JSON text frames (see DESIGN.md)."""

from __future__ import annotations

import asyncio
import json
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from agent.hub import Outbox as HubOutbox
from agent.session import ChatSession, error_frame
from api.deps import resolve_token
from api.sockets import POLICY_VIOLATION, TRY_AGAIN_LATER, Outbox, origin_allowed
from api.wiring import Services
from core.errors import NotAuthenticated

router = APIRouter(tags=["chat"])
log = logging.getLogger(__name__)


def _token(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return websocket.query_params.get("token") or None


@router.websocket("/api/v1/chat")
async def chat(websocket: WebSocket) -> None:
    """Check origin and token, then relay frames between client and session."""
    services: Services = websocket.app.state.services
    settings = services.settings
    origin = websocket.headers.get("origin")
    if not origin_allowed(origin, websocket.headers.get("host"), settings.ws_allowed_origins):
        log.warning("chat socket refused: origin %r is not allowed", origin)
        await websocket.close(code=POLICY_VIOLATION, reason="origin not allowed")
        return
    token = _token(websocket)
    try:
        if token is None:
            raise NotAuthenticated("send Authorization: Bearer <token> or ?token=")
        actor = await run_in_threadpool(resolve_token, services, token)
    except NotAuthenticated as exc:
        await websocket.close(code=POLICY_VIOLATION, reason=exc.message)
        return
    await websocket.accept()
    outgoing = Outbox(asyncio.get_running_loop(), settings.chat_outgoing_frames)
    send = outgoing.send

    async def writer() -> None:
        while True:
            frame = await outgoing.next()
            if frame is Outbox.OVERFLOW:
                log.warning(
                    "chat socket of %s closed: %d frames unread", actor.name, outgoing.limit
                )
                await websocket.close(code=TRY_AGAIN_LATER, reason="too many unread frames")
                return
            await websocket.send_text(json.dumps(frame, ensure_ascii=False, default=str))

    writing = asyncio.create_task(writer())
    session = await run_in_threadpool(
        ChatSession.open, services.chat, actor, send, websocket.query_params.get("session")
    )
    outbox = HubOutbox(actor.user_id or 0, session.session_id, send)
    services.hub.register(outbox)
    limit = settings.chat_max_frame_bytes
    try:
        while True:
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
            await run_in_threadpool(session.handle, frame)
    except (WebSocketDisconnect, RuntimeError):
        pass  # RuntimeError: the writer closed the socket (overflow) while we read
    finally:
        services.hub.unregister(outbox)
        writing.cancel()

"""The chat door: WebSocket `/api/v1/chat`, JSON text frames (see DESIGN.md)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool

from agent.hub import Outbox
from agent.session import ChatSession, error_frame
from api.deps import resolve_token
from api.wiring import Services
from core.errors import NotAuthenticated

router = APIRouter(tags=["chat"])
log = logging.getLogger(__name__)
POLICY_VIOLATION = 1008


def _token(websocket: WebSocket) -> str | None:
    header = websocket.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return websocket.query_params.get("token") or None


@router.websocket("/api/v1/chat")
async def chat(websocket: WebSocket) -> None:
    """Authenticate (header or ?token=), then relay frames between client and session."""
    services: Services = websocket.app.state.services
    token = _token(websocket)
    try:
        if token is None:
            raise NotAuthenticated("send Authorization: Bearer <token> or ?token=")
        actor = await run_in_threadpool(resolve_token, services, token)
    except NotAuthenticated as exc:
        await websocket.close(code=POLICY_VIOLATION, reason=exc.message)
        return
    await websocket.accept()
    loop = asyncio.get_running_loop()
    outgoing: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def send(frame: dict[str, Any]) -> None:  # callable from any thread
        loop.call_soon_threadsafe(outgoing.put_nowait, frame)

    async def writer() -> None:
        while True:
            frame = await outgoing.get()
            await websocket.send_text(json.dumps(frame, ensure_ascii=False, default=str))

    writing = asyncio.create_task(writer())
    session = await run_in_threadpool(
        ChatSession.open, services.chat, actor, send, websocket.query_params.get("session")
    )
    outbox = Outbox(actor.user_id or 0, session.session_id, send)
    services.hub.register(outbox)
    limit = services.settings.chat_max_frame_bytes
    try:
        while True:
            text = await websocket.receive_text()
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
    except WebSocketDisconnect:
        pass
    finally:
        services.hub.unregister(outbox)
        writing.cancel()

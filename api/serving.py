"""The uvicorn settings every server of the app uses (`shipdeck serve`, the test servers)."""

from __future__ import annotations

from typing import Any

import uvicorn
from fastapi import FastAPI

from core.config import Settings


def server_config(app: FastAPI, settings: Settings, **options: Any) -> uvicorn.Config:
    """A uvicorn config whose WebSocket refuses any message over the chat frame limit.

    `ws_max_size` makes the protocol layer close an oversized message (1009) from its header,
    before its payload is buffered: without it uvicorn reads up to 16 MiB per message first.
    permessage-deflate is offered only when `chat_compress_frames` says so.
    """
    options.setdefault("ws_max_size", settings.chat_max_frame_bytes)
    options.setdefault("ws_per_message_deflate", settings.chat_compress_frames)
    return uvicorn.Config(app, **options)

"""The uvicorn settings every server of the app uses (`shipdeck serve`, the test servers)."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from api.metrics import MULTIPROCESS
from core.config import Settings


class HandshakeAnsweringProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets protocol, answering a handshake that websockets refuses.

    websockets refuses a request line or header line over 8 KiB (414 / 431) but only queues
    the answer; uvicorn writes queued bytes when an event comes, and a refused handshake
    yields none, so the client waited forever. Here the answer is written and the
    connection closed at once.
    """

    def data_received(self, data: bytes) -> None:
        """Feed the protocol; write and close if it refused the handshake."""
        super().data_received(data)
        refused = self.conn.handshake_exc is not None and not self.handshake_initiated
        if refused and not self.transport.is_closing():
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()


def server_config(app: FastAPI, settings: Settings, **options: Any) -> uvicorn.Config:
    """A uvicorn config whose WebSocket refuses oversized messages and handshakes."""
    return uvicorn.Config(app, **{**socket_options(settings), **options})


def socket_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's WebSocket options for every server of the app, one process or several.

    `ws_max_size` makes the protocol layer close an oversized message (1009) from its header,
    before its payload is buffered: without it uvicorn reads up to 16 MiB per message first.
    permessage-deflate is offered only when `chat_compress_frames` says so.
    """
    return {
        "ws_max_size": settings.chat_max_frame_bytes,
        "ws_per_message_deflate": settings.chat_compress_frames,
        "ws": HandshakeAnsweringProtocol,
    }


# A request builds thousands of short-lived containers (a page of 50 views holds ~2,500 at
# once): with the interpreter's default of 700, the young generation was collected 3-4 times
# per page, and what the request still held was promoted and walked again by older ones.
YOUNG_OBJECTS = 10_000


def settle_heap() -> None:
    """Set the collector for a long-running server, once the app is loaded.

    Everything loaded so far (modules, mappers, the app) lives as long as the process: frozen
    out of the collector's sight, full collections stop walking it (~100 ms pauses on inbox
    calls). And the young generation is collected every `YOUNG_OBJECTS` containers, not 700.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS, middle, old)


def worker_app() -> FastAPI:
    """The app of one `shipdeck serve --workers N` process (uvicorn's factory, in the worker)."""
    from api.app import create_app
    from core.config import get_settings

    app = create_app(get_settings())
    settle_heap()  # as `serve` does
    return app


def serve_workers(settings: Settings, *, host: str, port: int, workers: int) -> None:
    """Run `workers` processes on one socket (uvicorn's supervisor; PostgreSQL only).

    The schema was migrated once by the caller; the workers do not migrate again (N
    processes racing one migration). Each has its own pool, sweeper and live-event listener,
    as replicas do.
    """
    os.environ["SHIPDECK_MIGRATE_ON_START"] = "false"
    # The workers' metrics meet in one directory, so a scrape of any worker counts them all.
    # It is set before they start (prometheus_client reads it as it is imported), and is a
    # new one each time: files left by an earlier run would be counted again.
    os.environ[MULTIPROCESS] = tempfile.mkdtemp(prefix="shipdeck-metrics-")
    try:
        uvicorn.run(
            "api.serving:worker_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="info",
            **socket_options(settings),  # each worker's sockets as one process's (they were not)
        )
    finally:
        shutil.rmtree(os.environ.pop(MULTIPROCESS), ignore_errors=True)

"""A real HTTP receiver on loopback (http.server in a thread) that keeps what it was sent."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    inbox: queue.Queue[Received] = field(default_factory=queue.Queue)
    statuses: list[int] = field(default_factory=list)  # answers to give first, then 200
    # JSON bodies to answer with, by path prefix (an API rather than a webhook); else "ok"
    answers: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next(self, timeout: float = 10) -> Received:
        return self.inbox.get(timeout=timeout)

    def drain(self) -> list[Received]:
        got: list[Received] = []
        while not self.inbox.empty():
            got.append(self.inbox.get_nowait())
        return got


@contextmanager
def receiver() -> Iterator[Receiver]:
    """Serve on a free loopback port until the block ends."""
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            box = holder["r"]
            with box.lock:
                status = box.statuses.pop(0) if box.statuses else 200
            if status == 200:
                box.inbox.put(Received(self.path, dict(self.headers.items()), body))
            answer = next((a for p, a in box.answers.items() if self.path.startswith(p)), None)
            self.send_response(status)
            kind = "text/plain" if answer is None else "application/json; charset=utf-8"
            self.send_header("Content-Type", kind)
            self.end_headers()
            self.wfile.write(b"ok" if answer is None else json.dumps(answer).encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = Receiver(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["r"]
    finally:
        server.shutdown()
        server.server_close()

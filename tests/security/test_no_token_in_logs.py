"""No token in a log line or a URL: the server's log, captured while an API client, a chat
client and a real browser work, holds no token and no usable ticket; the browser's socket URL
carries a single-use ticket, never the token."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from api.app import create_app
from api.logs import redact
from core.config import Settings
from tests.browser.test_console import CHROMIUM_FLAGS
from tests.conftest import World, service_unavailable
from tests.support.postgres import free_port
from tests.support.server import ChatClient, chat_ticket
from tests.support.threads import in_fresh_thread


class Captured(logging.Handler):
    """Every formatted line the server's loggers emit."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def logged_server(world: World) -> Iterator[tuple[str, Captured]]:
    """uvicorn at info level with its access log on, as `shipdeck serve` runs it."""
    settings = Settings(database_url=str(world.services.engine.url), migrate_on_start=False)
    app = create_app(settings, world.services)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info", access_log=True)
    server = uvicorn.Server(config)
    captured = Captured()
    # uvicorn's loggers do not propagate; the app's own ones reach the root logger
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error", "")]
    for logger in loggers:
        logger.addHandler(captured)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{port}", captured
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        for logger in loggers:
            logger.removeHandler(captured)


def test_redact() -> None:
    line = 'GET /x?a=1&token=sd_abc.def&ticket=T-1%2F&code=c0de&state=s "Bearer sd_zzz"'
    cleaned = redact(line)
    for secret in ("sd_abc.def", "T-1%2F", "c0de", "sd_zzz"):
        assert secret not in cleaned
    assert "a=1" in cleaned and "token=[redacted]" in cleaned


def test_api_and_chat_clients_leave_no_secret_in_the_log(
    world: World, logged_server: tuple[str, Captured]
) -> None:
    address, captured = logged_server
    token = world.tokens["alice"]
    # A client that still puts its token in the URL: refused, and the line is redacted.
    request = urllib.request.Request(
        f"http://{address}/api/v1/me?token={token}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["name"] == "alice"
    with pytest.raises((InvalidStatus, ConnectionClosed)):
        with connect(f"ws://{address}/api/v1/chat?token={token}") as ws:
            ws.recv(timeout=5)
    ticket = chat_ticket(address, token)
    with connect(f"ws://{address}/api/v1/chat?ticket={ticket}") as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "session"
    client = ChatClient(address, token, use_ticket=True)
    client.say("list targets")
    client.close()
    client = ChatClient(address, token, auth_frame=True)  # the token inside the socket
    client.say("list targets")
    client.close()
    mistyped = token[:-4] + "zzzz"  # a near miss is a secret too
    with connect(f"ws://{address}/api/v1/chat") as ws:
        ws.send(json.dumps({"type": "auth", "token": mistyped}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert mistyped not in closed.value.rcvd.reason
    log = "\n".join(captured.lines)
    assert "/api/v1/me?token=[redacted]" in log  # the access log saw the request
    assert "ticket=[redacted]" in log
    assert token not in log and ticket not in log and mistyped not in log


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_console_never_puts_the_token_in_a_url_or_the_log(
    world: World, logged_server: tuple[str, Captured]
) -> None:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        service_unavailable("Chromium is not installed (apt: chromium)")
    from playwright.sync_api import sync_playwright

    address, captured = logged_server
    token = world.tokens["alice"]
    urls: list[str] = []

    def drive() -> None:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.on("request", lambda r: urls.append(r.url))
                page.on("websocket", lambda ws: urls.append(ws.url))
                page.goto(f"http://{address}/#/chat")  # the dashboard is the landing page
                page.get_by_label("API token").fill(token)
                page.get_by_role("button", name="Sign in").click()
                page.get_by_text("live", exact=True).wait_for()
                page.get_by_label("Message").fill("list targets")
                page.get_by_label("Message").press("Enter")
                page.get_by_text("shop/prod").first.wait_for()
                # Revoked while the page is open: the console is signed out, not left half-working.
                tokens: list[dict[str, Any]] = json.loads(
                    urllib.request.urlopen(
                        urllib.request.Request(
                            f"http://{address}/api/v1/tokens",
                            headers={"Authorization": f"Bearer {token}"},
                        ),
                        timeout=10,
                    ).read()
                )["items"]
                revoke = urllib.request.Request(
                    f"http://{address}/api/v1/tokens/{tokens[0]['id']}/revoke",
                    method="POST",
                    headers={"Authorization": f"Bearer {world.tokens['admin']}"},
                )
                urllib.request.urlopen(revoke, timeout=10).read()
                page.get_by_label("API token").wait_for(timeout=5000)
            finally:
                browser.close()

    in_fresh_thread(drive)
    sockets = [u for u in urls if u.startswith("ws")]
    assert sockets and all("ticket=" in u for u in sockets)
    assert not any(token in u for u in urls)
    log = "\n".join(captured.lines)
    assert "WebSocket /api/v1/chat?ticket=[redacted]" in log
    assert token not in log

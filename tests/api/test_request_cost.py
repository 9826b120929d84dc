"""What one read request costs the database: a fixed, small number of statements."""

from __future__ import annotations

import json
import threading
import time
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.deps import Bearer
from api.invoke import _read
from api.wiring import Services
from core.config import Settings
from core.errors import InvalidInput, NotAuthenticated
from core.permissions import Channel
from tests.api.conftest import Api
from tests.conftest import World
from tests.support import engine_events
from tests.support.calls import call, deploy


def counted(api: Api) -> AbstractContextManager[list[str]]:
    """Statements sent by request handlers (the app's worker threads), not background work."""
    return engine_events.request_statements(api.world.services.engine)


def _pending(api: Api, project: str, environment: str, service: str) -> str:
    release = deploy(api.world, "alice", project, environment, **{service: {"image_tag": "9.9"}})
    call(api.world, "alice", "submit_release", release_id=release.id)
    return str(release.id)


def test_read_requests_cost_a_fixed_number_of_statements(api: Api) -> None:
    first = _pending(api, "shop", "prod", "web")
    _pending(api, "payment", "prod", "gateway")
    costs: dict[str, int] = {}
    for path in (
        "/api/v1/me",
        "/api/v1/releases",
        "/api/v1/approvals",
        f"/api/v1/releases/{first}",
    ):
        with counted(api) as statements:
            answer = api.get(path, user="admin")
        assert answer.status_code == 200, answer.text
        assert not any("audit_access_log" in s for s in statements), statements  # queued
        costs[path] = len(statements)
    # Authentication is one statement (token, user and grants joined); a page loads its
    # releases, previews, tickets, decisions, eligibility and deciders once each, and the
    # freezes of its targets once (`frozen` on every release and inbox item); a release's
    # newest preview comes in its own row. Before: 6 / 14 / 14 / 14 here (access-log insert,
    # grants per user, deciders per open ticket; /releases grew to 34 with 20 open tickets),
    # then 2 / 7 / 7 / 8 with the previews read apart. One release is read once: its core
    # answers a hidden one as a missing one itself (it was read twice, 7, until 2026-11-28:
    # a visibility check first). Releases come with their newest ticket and the freeze on
    # their target in their own row (6 / 6 / 6 until the thirteenth round). One release is
    # read in its token check's statement (4 until the seventeenth round).
    assert costs == {
        "/api/v1/me": 2,
        "/api/v1/releases": 4,
        "/api/v1/approvals": 5,
        f"/api/v1/releases/{first}": 3,
    }, costs


def test_one_release_without_a_ticket_costs_one_statement_with_its_token_check(api: Api) -> None:
    # a release by id is what pages and cards ask for most: the token check carries its read
    # (two statements until the seventeenth round; a statement costs about as much CPU as the
    # rest of such a read, see README "One round trip for the token and the release")
    release = deploy(api.world, "alice", "shop", "dev", web={"image_tag": "9.9"})
    with counted(api) as statements:
        answer = api.get(f"/api/v1/releases/{release.id}", user="alice")
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == release.id
    assert len(statements) == 1, statements
    assert "api_tokens" in statements[0] and "releases" in statements[0]


def test_a_read_checks_its_token_and_runs_its_tool_on_one_connection(api: Api) -> None:
    first = _pending(api, "shop", "prod", "web")
    checkouts: list[str] = []

    def checked_out(*args: Any) -> None:
        if threading.current_thread().name.startswith("AnyIO worker"):
            checkouts.append(threading.current_thread().name)

    engine = api.world.services.engine
    engine_events.listen(engine, "checkout", checked_out)
    try:
        for path in (
            "/api/v1/releases",
            "/api/v1/approvals",
            f"/api/v1/releases/{first}",
            f"/api/v1/releases/{first}/timeline",
            "/api/v1/targets",
            "/api/v1/freezes",
        ):
            checkouts.clear()
            answer = api.get(path, user="admin")
            assert answer.status_code == 200, answer.text
            # one worker thread, one pooled connection (was two hops and two checkouts). A
            # target's live status is left out: its runtime reads its own state apart.
            assert len(checkouts) == 1 and len(set(checkouts)) == 1, (path, checkouts)
    finally:
        engine_events.remove(engine, "checkout", checked_out)


def test_an_unknown_token_is_refused_before_the_input_is_judged(api: Api) -> None:
    hostile = (
        "/api/v1/releases?limit=abc",
        "/api/v1/approvals?risk=🚀" + "x" * 10_000,
        "/api/v1/releases/R-🚀" + "9" * 10_000,
        "/api/v1/releases/R-1",
    )
    for path in hostile:
        for token in (b"sd_" + b"0" * 43, "sd_🚀".encode(), b"x" * 10_000):
            answer = api.client.get(path, headers={b"Authorization": b"Bearer " + token})
            assert answer.status_code == 401, (path, answer.text)
            assert answer.json()["error"]["code"] == "not_authenticated"
            assert "limit" not in answer.text and "risk" not in answer.text
            assert "R-" not in answer.text
    assert api.get("/api/v1/releases?limit=abc", user="admin").status_code == 422
    assert api.get(hostile[2], user="admin").status_code == 422


def test_arguments_a_first_read_cannot_judge_are_refused_after_the_token_check(api: Api) -> None:
    # the path's pattern refuses a malformed id before the door; other doors may pass anything
    services = api.world.services
    for args in ({"release_id": "🚀" * 2_500}, {"release_id": 12.5}, {"release_id": None}, {}):
        with pytest.raises(NotAuthenticated):
            _read(services, Bearer("sd_" + "0" * 43, Channel.rest, None), "get_release", args)
        given = Bearer(api.world.tokens["admin"], Channel.rest, None)
        refused = _read(services, given, "get_release", args)
        assert refused.status_code == 422, refused.body
        assert json.loads(bytes(refused.body))["error"]["code"] == InvalidInput.code


def test_a_write_checks_its_token_and_runs_its_tool_in_one_thread_hop(api: Api) -> None:
    """Each hop is a turn in the queue for the server's worker threads, the longest wait of a
    request under load: a write operation (preview, submit, approve) took six, now three."""
    checked: ContextVar[bool] = ContextVar("token_checked", default=False)
    after_check: list[bool] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not threading.current_thread().name.startswith("AnyIO worker"):
            return
        if "FROM api_tokens" in statement:
            checked.set(True)  # seen by the rest of this hop only: a hop runs in its own copy
        elif statement.startswith(("INSERT", "UPDATE")):
            after_check.append(checked.get())

    engine = api.world.services.engine
    engine_events.listen(engine, "before_cursor_execute", record)
    try:
        body = {"project": "shop", "environment": "prod", "changes": {"web": {"image_tag": "8"}}}
        made = api.post("/api/v1/releases", json=body)
        assert made.status_code == 201, made.text
        rid = made.json()["id"]
        for path, user in (
            (f"/api/v1/releases/{rid}/submit", "alice"),
            (f"/api/v1/approvals/{rid}/approve", "bob"),
        ):
            answer = api.post(path, user=user)
            assert answer.status_code == 200, answer.text
    finally:
        engine_events.remove(engine, "before_cursor_execute", record)
    # every write of the three requests ran in the hop that checked the caller's token
    assert after_check and all(after_check), after_check


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_live_read_holds_no_connection_while_its_runtime_answers(world: World) -> None:
    # A live read's runtime may take seconds, and the sandbox reads its state on a connection
    # of its own: a read that kept its token check's connection through the call waited for a
    # second one. With one reader connection (db_pool_size 2) it waited for itself: 30 s, 500.
    url = str(world.services.engine.url)
    small = Services.build(Settings(database_url=url, db_pool_size=2), inline_apply=True)
    headers = {"Authorization": f"Bearer {world.tokens['alice']}"}
    try:
        with TestClient(create_app(Settings(database_url=url), small)) as client:
            for path in ("/api/v1/targets/shop/prod", "/api/v1/targets/shop/prod/diagnose"):
                started = time.monotonic()
                answer = client.get(path, headers=headers)
                assert answer.status_code == 200, answer.text
                assert time.monotonic() - started < 10, path
    finally:
        small.close()

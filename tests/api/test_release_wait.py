"""GET /releases/{id}?wait=S&while_state=...: a long-poll answered on the release's next state."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from api.deps import Bearer
from api.waiting import read_when_moved
from core.permissions import Channel
from tests.api.conftest import Api
from tests.conftest import World
from tests.support.calls import call, deploy
from tests.support.server import running_server

PREVIEW = {"project": "shop", "environment": "prod", "changes": {"web": {"image_tag": "1.5.0"}}}


def _approved(api: Api) -> str:
    rid = str(api.post("/api/v1/releases", json=PREVIEW).json()["id"])
    api.post(f"/api/v1/releases/{rid}/submit")
    assert api.post(f"/api/v1/approvals/{rid}/approve", user="bob").json()["lifecycle_state"] == (
        "approved"
    )
    return rid


def _until(condition: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_waiting_read_answers_once_the_release_leaves_the_states(api: Api) -> None:
    rid = _approved(api)
    bus = api.world.services.bus
    listening = len(bus)
    params = {"wait": 30, "while_state": ["approved"]}
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(api.get, f"/api/v1/releases/{rid}", params=params)
        _until(lambda: len(bus) > listening)  # the read has subscribed: it waits
        assert not waiting.done()
        assert api.post(f"/api/v1/releases/{rid}/apply").status_code == 202
        answered = waiting.result(timeout=10)
    assert answered.status_code == 200
    assert answered.json()["id"] == rid
    assert answered.json()["lifecycle_state"] in ("applying", "applied")
    assert len(bus) == listening  # the wait unsubscribed


def test_a_release_already_past_the_states_answers_at_once(api: Api) -> None:
    rid = _approved(api)
    api.post(f"/api/v1/releases/{rid}/apply")
    started = time.monotonic()
    params = {"wait": 60, "while_state": ["approved", "applying"]}
    answered = api.get(f"/api/v1/releases/{rid}", params=params)
    assert answered.json()["lifecycle_state"] == "applied"
    assert time.monotonic() - started < 10  # far from the 60 s asked for


def test_a_wait_that_sees_no_change_answers_the_unchanged_release_when_it_ends(
    api: Api,
) -> None:
    rid = _approved(api)
    answered = api.get(f"/api/v1/releases/{rid}", params={"wait": 0.2, "while_state": ["approved"]})
    assert answered.status_code == 200 and answered.json()["lifecycle_state"] == "approved"


def test_a_release_the_caller_may_not_see_is_refused_without_waiting(api: Api) -> None:
    rid = _approved(api)
    plain = api.get(f"/api/v1/releases/{rid}", user="frank")
    started = time.monotonic()
    waited = api.get(
        f"/api/v1/releases/{rid}", user="frank", params={"wait": 60, "while_state": ["approved"]}
    )
    assert waited.status_code == plain.status_code and waited.status_code in (403, 404)
    assert waited.json() == plain.json()
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(
    "params",
    [
        {"wait": "abc", "while_state": "approved"},
        {"wait": 61, "while_state": "approved"},
        {"wait": -1, "while_state": "approved"},
        {"wait": 1, "while_state": "x" * 10_000},
        {"wait": 1, "while_state": "🚀"},
    ],
    ids=["not-a-number", "too-long", "negative", "10k-state", "emoji-state"],
)
def test_hostile_wait_parameters_are_422(api: Api, params: dict[str, object]) -> None:
    rid = _approved(api)
    response = api.get(f"/api/v1/releases/{rid}", params=params)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_wait_whose_client_left_ends_at_once(world: World) -> None:
    """A long-poll holds a subscription and reads again every few seconds: one whose client
    hung up must not go on for its whole wait (a client could leave hundreds behind)."""
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.1"})
    call(world, "alice", "submit_release", release_id=release.id)
    bus = world.services.bus
    with running_server(world.services) as address:
        listening = len(bus)  # the server's own subscriptions included
        host, port = address.split(":")
        query = "wait=60&while_state=pending_approval"
        request = (
            f"GET /api/v1/releases/{release.id}?{query} HTTP/1.1\r\nHost: {address}\r\n"
            f"Authorization: Bearer {world.tokens['alice']}\r\n\r\n"
        )
        with socket.create_connection((host, int(port)), timeout=10) as client:
            client.sendall(request.encode())
            _until(lambda: len(bus) > listening)  # it waits
        # the client hung up: the wait ends with it, not a minute later
        _until(lambda: len(bus) == listening, timeout=5)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_wait_cancelled_midway_leaves_no_task_behind(world: World) -> None:
    """A server shutting down cancels its long-polls: nothing of theirs may stay pending."""
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.2"})
    call(world, "alice", "submit_release", release_id=release.id)
    bus = world.services.bus
    listening = len(bus)
    bearer = Bearer(world.tokens["alice"], Channel.rest, None)

    async def never_hangs_up() -> dict[str, object]:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def scenario() -> set[asyncio.Task[object]]:
        waiting = asyncio.ensure_future(
            read_when_moved(
                world.services, bearer, release.id, {"pending_approval"}, 30, never_hangs_up
            )
        )
        # until it has read once and waits: this task, the wait, its watch on the client
        # and its wake-up (no event says so)
        while len(asyncio.all_tasks()) < 4:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0)  # let cancelled tasks finish
        return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}

    assert asyncio.run(scenario()) == set()
    assert len(bus) == listening

"""Long-polls: a release read answered once a live event says it left the states given.

A client waiting for an apply (the CLI, a script, the compose benchmark) used to poll every
0.5 s; now it asks once and the answer comes when the release's next state is committed. The
wait holds no worker thread: a coroutine and a bus subscription. Every few seconds it reads
again anyway, so a missed event (a PostgreSQL listener reconnecting) costs a delay, not a hang.
A wait ends as soon as its client hangs up: the server does not cancel a request whose client
left, so a client could otherwise leave hundreds of waits reading for a minute each.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress

from fastapi.responses import JSONResponse
from starlette.types import Receive

from api.deps import Bearer
from api.invoke import invoke_read
from api.wiring import Services
from core.events import LiveEvent

RECHECK_SECONDS = 5.0
MAX_WAIT_SECONDS = 60.0
WAITING_READ = "/api/v1/releases/{release_id}?wait"  # a long-poll's route in the metrics


async def read_when_moved(
    services: Services,
    bearer: Bearer,
    release: str,
    states: set[str],
    wait: float,
    receive: Receive,
) -> JSONResponse:
    """`get_release`, answered when the release is in none of `states` or after `wait` s, or
    at once if the client hangs up (`receive`: the request's)."""
    loop = asyncio.get_running_loop()
    moved = asyncio.Event()
    known: list[str] = []  # the release's canonical id, once read

    def on_event(event: LiveEvent) -> None:
        # Before the first read answers, any event wakes the wait: one more read, no miss.
        if not known or (event.release_id == known[0] and event.lifecycle_state not in states):
            loop.call_soon_threadsafe(moved.set)

    unsubscribe = services.bus.subscribe(on_event)  # before the first read: no gap
    hung_up = asyncio.ensure_future(_hung_up(receive))
    try:
        deadline = loop.time() + wait
        while True:
            moved.clear()
            response = await invoke_read(services, bearer, "get_release", {"release_id": release})
            if response.status_code != 200:
                return response
            body = json.loads(bytes(response.body))
            known[:] = [str(body["id"])]
            left = deadline - loop.time()
            if body["lifecycle_state"] not in states or left <= 0:
                return response
            woken = asyncio.ensure_future(moved.wait())
            try:
                await asyncio.wait(
                    {woken, hung_up},
                    timeout=min(left, RECHECK_SECONDS),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:  # cancelled too (a server shutting down): it must not stay pending
                woken.cancel()
            if hung_up.done():
                return response  # to nobody: the client left
    finally:
        hung_up.cancel()
        unsubscribe()


async def _hung_up(receive: Receive) -> None:
    """Returns once the client has disconnected."""
    with suppress(Exception):  # a server that cannot say is taken as gone
        while (await receive())["type"] != "http.disconnect":
            pass

"""PostgreSQL: REST tool calls, reads and writes alike, take one of `db_call_threads` turns in
their worker thread, first come first served (core/turns.py); reads of a runtime's live state
take none.

With anyio's 40 threads every call in flight took its share of the one interpreter lock, so a
write's latency grew with everyone else's work (p99 1.3-1.4 s at 50 clients; 8 turns: 0.8 s,
the same throughput)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from core.turns import Turns, holding
from tests.api.conftest import Api
from tests.api.test_sqlite_reads import HeldAtCheckout
from tests.conftest import World
from tests.support import engine_events
from tests.support.calls import approved_dev, call, deploy
from tests.support.server import ChatClient, running_server


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_reads_and_writes_share_the_turns_and_live_reads_do_not_wait(
    api: Api, world: World
) -> None:
    services = world.services
    size = services.settings.db_call_threads
    turns = services.turns
    assert turns is not None and turns.size == size
    # on two targets: the second submit would supersede the first on the same one
    waiting = [
        deploy(world, "alice", "shop", env, web={"image_tag": "7.1"}) for env in ("staging", "prod")
    ]
    held = HeldAtCheckout()
    engine_events.listen(services.engine, "checkout", held.checkout)
    answers: list[Any] = []
    calls: list[threading.Thread] = []

    def run(method: str, path: str, **kwargs: Any) -> None:
        call = getattr(api, method)
        worker = threading.Thread(target=lambda: answers.append(call(path, **kwargs)))
        worker.start()
        calls.append(worker)

    try:
        for _ in range(size):
            run("get", "/api/v1/releases", user="bob")
        assert held.wait_for(lambda: held.inside == size), f"{held.inside} calls inside"
        for release in waiting:  # writes queue behind the reads
            run("post", f"/api/v1/releases/{release.id}/submit")
        assert held.wait_for(lambda: turns.waiting == 2)
        # a target's status reads the runtime: it does not queue
        run("get", "/api/v1/targets/shop/dev", user="bob")
        assert held.wait_for(lambda: held.inside == size + 1)
        assert turns.waiting == 2 and turns.running == size
    finally:
        held.release.set()
        for worker in calls:
            worker.join(30)
        # removed only now: a listener removed while a checkout runs the listeners breaks it
        engine_events.remove(services.engine, "checkout", held.checkout)
    assert sorted(a.status_code for a in answers) == [200] * (size + 3), [
        a.text for a in answers if a.status_code >= 300
    ]
    assert turns.running == 0 and turns.waiting == 0


class Occupied:
    """Every turn of `turns` held by a thread of its own until `release` is set."""

    def __init__(self, turns: Turns) -> None:
        self.turns = turns
        self.release = threading.Event()
        self._holders = [
            threading.Thread(target=turns.run, args=(self.release.wait,)) for _ in range(turns.size)
        ]

    def __enter__(self) -> Occupied:
        for holder in self._holders:
            holder.start()
        assert wait_until(lambda: self.turns.running == self.turns.size)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        for holder in self._holders:
            holder.join(30)


def wait_until(condition: Callable[[], bool], seconds: float = 10) -> bool:
    """Whether `condition` came true within `seconds` (checked on every turn's change)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)  # another thread's progress: nothing to wait on but its state
    return True


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_chat_message_waits_for_a_turn_like_a_rest_call(world: World) -> None:
    turns = world.services.turns
    assert turns is not None
    with running_server(world.services) as address:
        client = ChatClient(address, world.tokens["alice"])
        try:
            with Occupied(turns) as held:
                client.send({"type": "user_message", "text": "list releases of shop"})
                assert wait_until(lambda: turns.waiting == 1), "the chat frame took no turn"
                assert not [f for f in client.frames if f["type"] == "assistant_message"]
                held.release.set()
                reply = client.expect(lambda f: f["type"] == "assistant_message")
            assert "error" not in reply and reply["text"]
        finally:
            client.close()
        # Opening a socket and a message: every statement of the door's threads runs in a
        # turn, the handshake's token check included.
        statements: list[tuple[bool, str]] = []

        def executing(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
            if threading.current_thread().name.startswith("AnyIO worker"):
                statements.append((holding(), statement[:60]))

        engine_events.listen(world.services.engine, "before_cursor_execute", executing)
        try:
            other = ChatClient(address, world.tokens["bob"])
            other.say("list releases of shop")
            other.close()
        finally:
            engine_events.remove(world.services.engine, "before_cursor_execute", executing)
        assert any("api_tokens" in text for _, text in statements), statements
        assert all(held for held, _ in statements), statements
    assert turns.running == 0 and turns.waiting == 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_an_inline_apply_steps_out_of_its_turn_for_the_rollout(world: World) -> None:
    """`shipdeck mcp` applies in the caller's thread: the rollout (minutes on a cluster) must
    not hold one of the turns the process's database work waits for."""
    turns = world.services.turns
    assert turns is not None
    release = approved_dev(world)
    me = threading.get_ident()
    written: list[tuple[int, str]] = []  # turns held at each write of this thread

    def executing(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        if threading.get_ident() == me and not statement.startswith("SELECT"):
            written.append((turns.running, statement.split("(")[0][:40]))

    engine_events.listen(world.services.engine, "before_cursor_execute", executing)
    try:
        applied = turns.run(lambda: call(world, "alice", "apply_release", release_id=release))
    finally:
        engine_events.remove(world.services.engine, "before_cursor_execute", executing)
    assert applied.lifecycle_state == "applying"  # its answer; the rollout ran after it, inline
    done = call(world, "alice", "get_release", release_id=release)
    assert done.lifecycle_state == "applied", done
    rollout = [held for held, statement in written if "sandbox_services" in statement]
    assert rollout and set(rollout) == {0}, written  # the simulated runtime's own writes
    assert any(held == 1 for held, _ in written), written  # the release's, in the turn
    assert turns.running == 0

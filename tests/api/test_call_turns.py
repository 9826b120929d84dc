"""PostgreSQL: REST tool calls, reads and writes alike, take one of `db_call_threads` turns in
their worker thread, first come first served (core/turns.py); reads of a runtime's live state
take none.

With anyio's 40 threads every call in flight took its share of the one interpreter lock, so a
write's latency grew with everyone else's work (p99 1.3-1.4 s at 50 clients; 8 turns: 0.8 s,
the same throughput)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import event

from tests.api.conftest import Api
from tests.api.test_sqlite_reads import HeldAtCheckout
from tests.conftest import World
from tests.support.calls import deploy


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
    event.listen(services.engine, "checkout", held.checkout)
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
        event.remove(services.engine, "checkout", held.checkout)
    assert sorted(a.status_code for a in answers) == [200] * (size + 3), [
        a.text for a in answers if a.status_code >= 300
    ]
    assert turns.running == 0 and turns.waiting == 0

"""The collector as a server sets it after start-up (`api.serving.settle_heap`)."""

from __future__ import annotations

import gc

from api.serving import settle_heap
from tests.api.conftest import Api
from tests.conftest import _settle
from tests.support.calls import call, deploy


def test_a_page_of_fifty_releases_is_served_without_a_collection(api: Api) -> None:
    # With the interpreter's default (700 containers), serving this page collected the young
    # generation 5 times, promoting what the request still held to be walked again later.
    for n in range(50):
        release = deploy(api.world, "alice", "shop", "prod", web={"image_tag": f"1.{n}"})
        if n % 2:
            call(api.world, "alice", "submit_release", release_id=release.id)  # with tickets
    assert api.get("/api/v1/releases", params={"limit": 50}, user="admin").status_code == 200
    _settle(api.world.services)  # no background work (hub, listener) allocates meanwhile
    kept = gc.get_threshold()
    try:
        settle_heap()
        before = [generation["collections"] for generation in gc.get_stats()]
        answer = api.get("/api/v1/releases", params={"limit": 50}, user="admin")
        collected = [g["collections"] - n for g, n in zip(gc.get_stats(), before, strict=True)]
    finally:
        gc.unfreeze()  # the rest of the test run is not a server
        gc.set_threshold(*kept)
    assert answer.status_code == 200, answer.text
    page = answer.json()["items"]
    assert len(page) == 50 and sum(item["approval"] is not None for item in page) == 25
    assert collected == [0, 0, 0]

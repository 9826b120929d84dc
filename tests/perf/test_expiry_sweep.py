"""The sweeper reads the previews that ran out since its last pass, not every waiting release."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update

from core.db import utcnow
from core.flows.expiry import ExpirySweep
from core.releases.models import Preview
from tests.conftest import World
from tests.support.calls import call, deploy


def run_out(world: World, release_id: str, at: datetime) -> None:
    """Move a release's previews' expiry to `at` (what time, or an outside hand, does)."""
    with world.services.sessions() as session:
        session.execute(
            update(Preview)
            .where(Preview.release_number == int(release_id.removeprefix("R-")))
            .values(expires_at=at)
        )
        session.commit()


def _state(world: World, release_id: str) -> str:
    return str(call(world, "alice", "get_release", release_id=release_id).lifecycle_state)


def _sweep(world: World, sweep: ExpirySweep) -> int:
    with world.services.sessions() as session:
        return sweep.run(session)


def test_passes_expire_what_ran_out_since_the_last_one(world: World) -> None:
    sweep = ExpirySweep(full_every=3)
    old = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    run_out(world, old.id, utcnow() - timedelta(days=400))
    assert _sweep(world, sweep) == 1  # the first pass is full
    assert _state(world, old.id) == "expired"

    fresh = deploy(world, "alice", "shop", "dev", web={"image_tag": "2.0"})
    call(world, "alice", "submit_release", release_id=fresh.id)
    live = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "9"})
    stale = deploy(world, "alice", "shop", "staging", web={"image_tag": "3.0"})
    run_out(world, fresh.id, utcnow() - timedelta(seconds=1))
    # Set back by hand far before the last pass: left to the next full pass.
    run_out(world, stale.id, utcnow() - timedelta(days=400))
    assert _sweep(world, sweep) == 1
    assert [_state(world, r.id) for r in (fresh, live, stale)] == [
        "expired",
        "previewed",
        "previewed",
    ]
    assert _sweep(world, sweep) == 0
    assert _sweep(world, sweep) == 1  # every third pass is full (this is the fourth)
    assert [_state(world, r.id) for r in (fresh, live, stale)] == [
        "expired",
        "previewed",
        "expired",
    ]


def test_a_repreviewed_release_is_not_expired(world: World) -> None:
    sweep = ExpirySweep()
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    run_out(world, release.id, utcnow() - timedelta(seconds=1))
    call(world, "alice", "repreview_release", release_id=release.id)
    assert _sweep(world, sweep) == 0
    assert _state(world, release.id) == "previewed"

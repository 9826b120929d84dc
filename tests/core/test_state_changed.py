"""A lost compare-and-set says the release changed under the call, never "illegal transition".

Two sessions race on one release: the first read it, the second moved it on (a re-preview keeps
`approved` but bumps the version), then the first writes. It used to answer "R-n is approved;
cancel needs one of: approved, ..." — naming a state the action IS allowed from.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from core.errors import IllegalTransition, ShipdeckError, StateChanged
from core.flows.submit import submit_release
from core.ids import parse_release_id
from core.permissions import SYSTEM
from core.releases.lifecycle import State, allowed, transition
from core.releases.models import Release
from tests.conftest import World, build_world
from tests.support.calls import call, deploy


def _approved(world: World, tag: str = "1.5.0", service: str = "web") -> str:
    release = deploy(world, "alice", "shop", "prod", **{service: {"image_tag": tag}})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "bob", "approve_release", release_id=release.id)
    return str(release.id)


def test_a_lost_compare_and_set_is_state_changed_naming_the_new_state(world: World) -> None:
    rid = _approved(world)
    number = parse_release_id(rid)
    with world.services.sessions() as first:
        stale = first.get(Release, number)
        assert stale is not None and stale.lifecycle_state == "approved"
        first.commit()  # the read is over (as a runtime call's commit ends it mid-call)
        call(world, "bob", "repreview_release", release_id=rid)  # same diff: still approved
        with pytest.raises(StateChanged) as caught:
            transition(first, stale, action="cancel", to=State.cancelled, actor=SYSTEM)
        first.rollback()
    error = caught.value
    assert not isinstance(error, IllegalTransition)
    assert error.code == "state_changed"
    assert error.details["current_state"] == "approved"
    assert error.details["version"] == error.details["read_version"] + 1
    assert f"{rid} changed while cancel ran (now approved)" in error.message
    assert "needs one of" not in error.message
    # nothing was written: the release is still approved and can be cancelled now
    assert call(world, "alice", "get_release", release_id=rid).lifecycle_state == "approved"
    assert call(world, "alice", "cancel_release", release_id=rid).lifecycle_state == "cancelled"


def test_a_state_changed_answers_409_over_rest_with_the_state(world: World) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from core.config import Settings

    rid = _approved(world)
    number = parse_release_id(rid)
    with world.services.sessions() as first:
        stale = first.get(Release, number)
        assert stale is not None
        first.commit()
        call(world, "bob", "repreview_release", release_id=rid)
        with pytest.raises(StateChanged) as caught:
            transition(first, stale, action="cancel", to=State.cancelled, actor=SYSTEM)
    app = create_app(Settings(database_url=str(world.services.engine.url)), world.services)

    @app.get("/raise")
    def _raise() -> None:
        raise caught.value

    response = TestClient(app).get("/raise")
    assert response.status_code == 409
    body = response.json()["error"]
    assert body["code"] == "state_changed"
    assert body["details"]["current_state"] == "approved"


def test_submit_supersedes_an_older_release_that_changed_under_it(world: World) -> None:
    older = _approved(world, "1.5.0")
    newer = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.6.0"})
    with world.services.sessions() as session:
        stale = session.get(Release, parse_release_id(older))  # what submit's query will return
        assert stale is not None
        session.commit()
        call(world, "bob", "repreview_release", release_id=older)  # bumps its version
        submitted = submit_release(
            session, actor=world.actor("alice"), runner=None, release=newer.id
        )
    assert submitted.lifecycle_state == "pending_approval"
    gone = call(world, "alice", "get_release", release_id=older)
    assert gone.lifecycle_state == "cancelled"
    assert f"superseded by {newer.id}" in (gone.reason or "")


def _outcome(world: World, user: str, tool: str, rid: str) -> tuple[str, str | None]:
    try:
        call(world, user, tool, release_id=rid)
        return "ok", None
    except ShipdeckError as exc:
        return exc.code, exc.details.get("current_state")


@pytest.fixture
def pg_world(pg_services) -> World:
    return build_world(pg_services)


@pytest.mark.postgres
def test_racing_cancels_and_repreviews_never_name_an_allowed_state(pg_world: World) -> None:
    rid = _approved(pg_world)
    jobs = [("alice", "cancel_release")] * 4 + [("bob", "repreview_release")] * 4
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda job: _outcome(pg_world, job[0], job[1], rid), jobs))
    assert [o for o, _ in outcomes[:4]].count("ok") == 1, outcomes  # one cancel wins
    for (_, tool), (code, state) in zip(jobs, outcomes, strict=True):
        assert code in ("ok", "state_changed", "illegal_transition"), outcomes
        if code == "illegal_transition":  # refused up front: the state it names is not allowed
            action = tool.removesuffix("_release")
            assert state is not None and not allowed(state, action), outcomes
    final = call(pg_world, "alice", "get_release", release_id=rid).lifecycle_state
    assert final == "cancelled"

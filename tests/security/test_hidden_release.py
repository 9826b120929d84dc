"""`get_release` and `release_timeline` answer a release the caller cannot see themselves, in
their one read of the release: exactly as a missing one, at the same cost in statements, so
neither the answer nor the work done tells them apart. (Other calls naming a release are
checked by `tools.visibility` first, except the decisions: approve, reject and take over
read the release once, locked, and answer a hidden one there.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import World
from tests.support import engine_events
from tests.support.calls import call, deploy


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    from api.app import create_app
    from core.config import Settings

    settings = Settings(database_url=str(world.services.engine.url), migrate_on_start=False)
    with TestClient(create_app(settings, world.services)) as test_client:
        yield test_client


def _get(
    client: TestClient, world: World, user: str, rid: str, then: str = ""
) -> tuple[int, Any, list[str]]:
    with engine_events.request_statements(world.services.engine) as statements:
        response = client.get(
            f"/api/v1/releases/{rid}{then}",
            headers={"Authorization": f"Bearer {world.tokens[user]}"},
        )
    return response.status_code, response.json(), statements


def _reads_of_releases(statements: list[str]) -> int:
    return sum(1 for s in statements if s.startswith("SELECT") and " FROM releases" in s)


def _missing(rid: str) -> dict[str, Any]:
    return {"code": "not_found", "message": f"no release {rid}", "details": {"release_id": rid}}


@pytest.mark.parametrize("then", ["", "/timeline"])
def test_a_hidden_release_reads_as_a_missing_one_at_the_same_cost(
    world: World, client: TestClient, then: str
) -> None:
    shop = deploy(world, "alice", "shop", "prod", web={"image_tag": "4.2"}).id
    status, body, seen = _get(client, world, "victor", shop, then)  # a viewer of shop
    assert status == 200, body
    # frank holds a role on payment only
    absent = f"R-{int(shop[2:]) + 1000}"
    hidden_status, hidden, hidden_statements = _get(client, world, "frank", shop, then)
    missing_status, missing, missing_statements = _get(client, world, "frank", absent, then)
    assert (hidden_status, missing_status) == (404, 404)
    assert hidden["error"] == _missing(shop), hidden
    assert missing["error"] == _missing(absent), missing
    # The same statements for both (the token, the release, the refusal's audit event), and
    # the release is read once: no visibility check reads it before its core does.
    assert len(hidden_statements) == len(missing_statements), (hidden_statements, missing)
    for statements in (seen, hidden_statements, missing_statements):
        assert _reads_of_releases(statements) == 1, statements


def test_a_removed_grant_hides_the_release_at_the_next_read(
    world: World, client: TestClient
) -> None:
    shop = deploy(world, "alice", "shop", "prod", web={"image_tag": "4.3"}).id
    assert _get(client, world, "victor", shop)[0] == 200
    with world.services.engine.begin() as connection:  # as an operator's SQL would
        connection.execute(
            text("DELETE FROM grants WHERE user_id = (SELECT id FROM users WHERE name = 'victor')")
        )
    status, body, _ = _get(client, world, "victor", shop)
    assert status == 404 and body["error"] == _missing(shop), body


def _waiting(world: World, tag: str) -> str:
    """A shop/prod release waiting for approval (alice requested it)."""
    shop = deploy(world, "alice", "shop", "prod", web={"image_tag": tag}).id
    call(world, "alice", "submit_release", release_id=shop)
    return str(shop)


def _post(
    client: TestClient, world: World, user: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any, list[str]]:
    with engine_events.request_statements(world.services.engine) as statements:
        response = client.post(
            path, json=body, headers={"Authorization": f"Bearer {world.tokens[user]}"}
        )
    return response.status_code, response.json(), statements


@pytest.mark.parametrize("action", ["approve", "reject", "takeover"])
def test_a_decision_on_a_hidden_release_answers_as_a_missing_one(
    world: World, client: TestClient, action: str
) -> None:
    shop = _waiting(world, "4.6")
    absent = f"R-{int(shop[2:]) + 1000}"
    answers = {
        rid: _post(client, world, "frank", f"/api/v1/approvals/{rid}/{action}")
        for rid in (shop, absent)
    }
    for rid, (status, body, _) in answers.items():
        body["error"].pop("request_id", None)
        assert (status, body["error"]) == (404, _missing(rid)), body
    # the same work for both: the token, the release read once (locked), the refusal's event
    hidden, missing = answers[shop][2], answers[absent][2]
    assert len(hidden) == len(missing), (hidden, missing)
    assert _reads_of_releases(hidden) == _reads_of_releases(missing) == 1, hidden
    after = call(world, "alice", "get_release", release_id=shop)
    assert after.lifecycle_state == "pending_approval" and after.approval is not None
    assert (after.approval.decisions, after.approval.assignee) == ([], None)
    # one who can see it and may decide still does, in one read of the release too
    status, body, statements = _post(client, world, "erin", f"/api/v1/approvals/{shop}/{action}")
    assert status == 200, body
    assert _reads_of_releases(statements) == 1, statements


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_decision_on_a_hidden_release_neither_locks_it_nor_waits_for_its_lock(
    world: World,
) -> None:
    """Waiting behind a writer that holds the row would tell a hidden release from a missing
    one (a missing one answers at once); and an outsider must not hold other projects' rows."""
    from core.errors import NotFound

    shop = _waiting(world, "4.8")
    answered: dict[str, str] = {}

    def decide(tool: str) -> None:
        try:
            call(world, "frank", tool, release_id=shop)
        except NotFound as exc:
            answered[tool] = exc.message

    with world.services.engine.connect() as holder, holder.begin():
        held = {"n": int(shop[2:])}
        holder.execute(text("SELECT number FROM releases WHERE number = :n FOR UPDATE"), held)
        for tool in ("approve_release", "reject_release", "takeover_approval"):
            caller = threading.Thread(target=decide, args=(tool,))
            caller.start()
            caller.join(timeout=10)  # answered while the row is still held: it never waited
            assert not caller.is_alive(), f"{tool} waited for the hidden release's lock"
    assert answered == dict.fromkeys(answered, f"no release {shop}") and len(answered) == 3


@pytest.mark.parametrize("action", ["approve", "reject", "takeover"])
def test_a_viewer_who_may_not_decide_is_refused_not_told_it_is_missing(
    world: World, client: TestClient, action: str
) -> None:
    shop = _waiting(world, "4.9")
    status, body, _ = _post(client, world, "victor", f"/api/v1/approvals/{shop}/{action}")
    assert (status, body["error"]["code"]) == (403, "permission_denied"), body


def test_a_batch_decision_answers_hidden_items_as_missing_ones(
    world: World, client: TestClient
) -> None:
    shop = _waiting(world, "4.7")
    absent = f"R-{int(shop[2:]) + 1000}"
    for action in ("approve", "reject"):
        body = {"action": action, "release_ids": [shop, absent]}
        status, answer, _ = _post(client, world, "frank", "/api/v1/approvals/batch", body)
        assert status == 200, answer
        assert [(i["release_id"], i["ok"], i["error"]) for i in answer["items"]] == [
            (shop, False, _missing(shop)),
            (absent, False, _missing(absent)),
        ], answer
    assert call(world, "alice", "get_release", release_id=shop).lifecycle_state == (
        "pending_approval"
    )


def test_every_door_gives_the_same_answer_for_a_hidden_release(world: World) -> None:
    """The tools called in core's own process (as chat and MCP call them) answer as REST does."""
    from core.errors import NotFound

    shop = deploy(world, "alice", "shop", "prod", web={"image_tag": "4.4"}).id
    for tool in ("get_release", "release_timeline"):
        with pytest.raises(NotFound) as hidden:
            call(world, "frank", tool, release_id=shop)
        assert (hidden.value.message, hidden.value.details) == (
            f"no release {shop}",
            {"release_id": shop},
        )
    assert call(world, "admin", "get_release", release_id=shop).id == shop
    assert call(world, "admin", "release_timeline", release_id=shop).entries


@pytest.mark.parametrize(
    "tool", ["get_release", "approve_release", "reject_release", "takeover_approval"]
)
@pytest.mark.parametrize(
    "rid", ["R-" + "9" * 10_000, "R-🚀", "💥" * 10_000, "R-0", "R--1", 42, "R-999999999999"]
)
def test_hostile_ids_get_one_answer_whoever_asks(
    world: World, client: TestClient, rid: object, tool: str
) -> None:
    """Through the tool door (a JSON body: no URL length limit on the way in)."""
    answers = {}
    for user in ("victor", "frank", "admin"):
        response = client.post(
            f"/api/v1/tools/{tool}",
            json={"release_id": rid},
            headers={"Authorization": f"Bearer {world.tokens[user]}"},
        )
        body = response.json()
        body.get("error", {}).pop("request_id", None)
        answers[user] = (response.status_code, body)
    assert len({(status, str(body)) for status, body in answers.values()}) == 1, answers
    assert next(iter(answers.values()))[0] in (404, 422), answers

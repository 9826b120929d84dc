"""The authorization matrix over every door: each role x each action, allowed or refused.

Roles on project `shop` (tests/conftest.py WORLD): victor is a viewer, alice a requester (and
the requester of every release here), erin an approver, admin an admin of every project, and
frank an outsider (he only owns `payment`). A refused call changes nothing (releases, tickets,
decisions, state-changing audit events, cards), and an outsider is answered exactly like for
something that does not exist. Doors: REST routes, the tool door, the chat WebSocket.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import (
    World,
    _services_for,
    _settle,
    _wipe,
    build_world,
    service_unavailable,
)
from tests.support.calls import call, deploy
from tests.support.server import ChatClient, running_server

ROLES = {
    "viewer": "victor",
    "requester": "alice",
    "approver": "erin",
    "admin": "admin",
    "outsider": "frank",
}
SEE = {"viewer", "requester", "approver", "admin"}
REQUEST = {"requester", "approver", "admin"}
DECIDE = {"approver", "admin"}
_tags = itertools.count(1)


def _tag() -> str:
    return f"9.{next(_tags)}.0"


@dataclass(frozen=True)
class Action:
    """One thing a user may try: the tool, what it needs to exist first, who may do it."""

    name: str
    tool: str
    allowed: set[str]
    needs: str | None = None  # previewed | approved | pending: a fresh release in that state
    args: Callable[[], dict[str, Any]] = field(default=dict)


ACTIONS = [
    Action("read a release", "get_release", SEE, "previewed"),
    Action("read a timeline", "release_timeline", SEE, "previewed"),
    Action("list releases", "list_releases", SEE, args=lambda: {"project": "shop"}),
    Action(
        "target status",
        "target_status",
        SEE,
        args=lambda: {"project": "shop", "environment": "dev"},
    ),
    Action("read the audit", "list_audit", SEE, args=lambda: {"project": "shop"}),
    Action("read the inbox", "list_approvals", SEE, args=lambda: {"project": "shop"}),
    Action(
        "preview",
        "preview_release",
        REQUEST,
        args=lambda: {
            "project": "shop",
            "environment": "dev",
            "changes": {"web": {"image_tag": _tag()}},
        },
    ),
    Action("re-preview", "repreview_release", REQUEST, "previewed"),
    Action("submit", "submit_release", {"requester", "admin"}, "previewed"),  # only the requester
    Action("cancel", "cancel_release", REQUEST, "previewed"),
    Action("apply", "apply_release", REQUEST, "approved"),
    Action(
        "rollback",
        "rollback_release",
        REQUEST,
        args=lambda: {"project": "shop", "environment": "dev"},
    ),
    Action("approve", "approve_release", DECIDE, "pending"),
    Action("reject", "reject_release", DECIDE, "pending"),
    Action("take over", "takeover_approval", DECIDE, "pending"),
]
CELLS = [(action, role) for action in ACTIONS for role in ROLES]


def rest_request(tool: str, args: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """The resource route (method, path, json or params) that runs `tool`."""
    rid = args.get("release_id")
    routes: dict[str, tuple[str, str, dict[str, Any]]] = {
        "get_release": ("get", f"/api/v1/releases/{rid}", {}),
        "release_timeline": ("get", f"/api/v1/releases/{rid}/timeline", {}),
        "list_releases": ("get", "/api/v1/releases", {"params": args}),
        "target_status": (
            "get",
            f"/api/v1/targets/{args.get('project')}/{args.get('environment')}",
            {},
        ),
        "list_audit": ("get", "/api/v1/audit", {"params": args}),
        "list_approvals": ("get", "/api/v1/approvals", {"params": args}),
        "preview_release": ("post", "/api/v1/releases", {"json": args}),
        "repreview_release": ("post", f"/api/v1/releases/{rid}/preview", {}),
        "submit_release": ("post", f"/api/v1/releases/{rid}/submit", {}),
        "cancel_release": ("post", f"/api/v1/releases/{rid}/cancel", {"json": {}}),
        "apply_release": ("post", f"/api/v1/releases/{rid}/apply", {}),
        "rollback_release": ("post", "/api/v1/rollbacks", {"json": args}),
        "approve_release": ("post", f"/api/v1/approvals/{rid}/approve", {"json": {}}),
        "reject_release": ("post", f"/api/v1/approvals/{rid}/reject", {"json": {}}),
        "takeover_approval": ("post", f"/api/v1/approvals/{rid}/takeover", {}),
    }
    return routes[tool]


def prepare(world: World, needs: str | None) -> dict[str, Any]:
    """A fresh release of alice's in the state the action starts from."""
    if needs is None:
        return {}
    env = "prod" if needs == "pending" else "dev"
    release = deploy(world, "alice", "shop", env, web={"image_tag": _tag()})
    if needs in ("approved", "pending"):
        call(world, "alice", "submit_release", release_id=release.id)
    return {"release_id": release.id}


READS = {"get_release", "release_timeline"}


class Fixtures:
    """A release per action, made fresh only once an allowed call has used it up.

    A refused call leaves everything as it was (each cell checks that), and a read changes
    nothing, so the next role of the same action can try the very same release.
    """

    def __init__(self, world: World) -> None:
        self.world = world
        self.ready: dict[str, dict[str, Any]] = {}

    def args(self, action: Action) -> dict[str, Any]:
        """What the action needs to exist, made if needed."""
        if action.name not in self.ready:
            self.ready[action.name] = prepare(self.world, action.needs)
        return {**self.ready[action.name], **action.args()}

    def used(self, action: Action) -> None:
        """An allowed call ran: the next one needs a fresh release."""
        if action.tool not in READS:
            self.ready.pop(action.name, None)


def snapshot(world: World) -> dict[str, list[tuple[Any, ...]]]:
    """What a refused call must leave as it was (once background work has settled)."""
    _settle(world.services)  # approval cards for a new ticket are made on the hub's thread
    queries = {
        "releases": "SELECT number, lifecycle_state, version FROM releases ORDER BY number",
        "tickets": "SELECT id, state, assignee_id FROM approval_tickets ORDER BY id",
        "decisions": "SELECT id FROM approval_decisions ORDER BY id",
        "previews": "SELECT id FROM previews ORDER BY id",
        "cards": "SELECT id, state FROM chat_cards ORDER BY id",
        # Refusals and reads are recorded (who tried what); nothing else may be.
        "audit": "SELECT seq FROM audit_events WHERE action NOT IN ('refused', 'read') "
        "ORDER BY seq",
    }
    with world.services.engine.connect() as connection:
        return {k: [tuple(r) for r in connection.execute(text(q))] for k, q in queries.items()}


def ensure_applied_dev(world: World) -> None:
    """Rollback needs something applied on shop/dev."""
    release = deploy(world, "alice", "shop", "dev", web={"image_tag": _tag()})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "alice", "apply_release", release_id=release.id)


def check_refusal(
    world: World, role: str, action: Action, args: dict[str, Any], error: dict[str, Any]
) -> None:
    """Visible but not allowed: 403. Not visible: exactly the nonexistent object's answer."""
    if role != "outsider":
        assert error["code"] == "permission_denied", (action.name, role, error)
        return
    assert error["code"] == "not_found", (action.name, role, error)
    if "release_id" in args:
        assert error["message"] == f"no release {args['release_id']}"
        assert error["details"] == {"release_id": args["release_id"]}
    else:
        assert error["message"] == "no project named 'shop'"
        assert error["details"] == {"project": "shop", "known": ["payment"]}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def world(request: pytest.FixtureRequest, memory_sqlite_url: str) -> Iterator[World]:
    """One world per database for the whole module: authorization is decided in core, so the
    matrix runs on both; every cell makes its own releases, so cells share the world."""
    if request.param == "sqlite":
        url = memory_sqlite_url  # memory-backed: thousands of audited commits
    else:
        found = request.getfixturevalue("postgres_url")
        if found is None:
            service_unavailable("PostgreSQL is not available (no initdb/pg_ctl, no test URL)")
        url = str(found)
    services = _services_for(url)
    _wipe(services)
    yield build_world(services)
    _settle(services)


@pytest.fixture(scope="module")
def client(world: World) -> Iterator[TestClient]:
    from api.app import create_app
    from core.config import Settings

    settings = Settings(database_url=str(world.services.engine.url), migrate_on_start=False)
    with TestClient(create_app(settings, world.services)) as test_client:
        yield test_client


@pytest.mark.parametrize("door", ["rest", "tool door"])
def test_authorization_matrix_over_http(world: World, client: TestClient, door: str) -> None:
    ensure_applied_dev(world)
    outcomes: dict[tuple[str, str], str] = {}
    fixtures = Fixtures(world)
    for action, role in CELLS:
        args = fixtures.args(action)
        headers = {"Authorization": f"Bearer {world.tokens[ROLES[role]]}"}
        if door == "rest":
            method, path, kwargs = rest_request(action.tool, args)
        else:
            method, path, kwargs = "post", f"/api/v1/tools/{action.tool}", {"json": args}
        before = snapshot(world)
        response = getattr(client, method)(path, headers=headers, **kwargs)
        if role in action.allowed:
            assert response.status_code in (200, 201, 202), (action.name, role, response.text)
            outcomes[(action.name, role)] = "allow"
            fixtures.used(action)
            continue
        assert response.status_code == (404 if role == "outsider" else 403), (action.name, role)
        check_refusal(world, role, action, args, response.json()["error"])
        assert snapshot(world) == before, (action.name, role, "a refused call changed state")
        outcomes[(action.name, role)] = "deny"
    assert len(outcomes) == len(ACTIONS) * len(ROLES)


# What chat can be asked about one release id; each becomes a card (or a read) as the user.
CHAT_TEXT = {
    "read a timeline": "timeline {rid}",
    "re-preview": "repreview {rid}",
    "submit": "submit {rid}",
    "cancel": "cancel {rid}",
    "apply": "apply {rid}",
    "approve": "approve {rid}",
    "reject": "reject {rid}",
    "take over": "takeover {rid}",
}


def decided(card_id: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the frame that shows the card done or failed."""

    def match(frame: dict[str, Any]) -> bool:
        card = frame.get("card") or {}
        return (
            frame["type"] == "card"
            and card.get("id") == card_id
            and card.get("state")
            in (
                "done",
                "failed",
            )
        )

    return match


def test_authorization_matrix_over_chat(world: World) -> None:
    actions = [a for a in ACTIONS if a.name in CHAT_TEXT]
    with running_server(world.services) as address:
        clients = {role: ChatClient(address, world.tokens[user]) for role, user in ROLES.items()}
        fixtures = Fixtures(world)
        for action, role in itertools.product(actions, ROLES):
            args = fixtures.args(action)
            rid = args["release_id"]
            chat = clients[role]
            before = snapshot(world)
            chat.send({"type": "user_message", "text": CHAT_TEXT[action.name].format(rid=rid)})
            if role == "outsider":  # no card, no diff: the answer a missing release gets
                error = chat.expect(lambda f: f["type"] == "error")
                check_refusal(
                    world, role, action, args, error | {"details": error.get("details", {})}
                )
                chat.expect(lambda f: f["type"] == "assistant_message")
                assert snapshot(world) == before, (action.name, role)
                continue
            if action.tool == "release_timeline":  # a read runs at once
                frame = chat.expect(lambda f: f["type"] in ("tool_result", "error"))
                assert frame["type"] == "tool_result", (action.name, role, frame)
                chat.expect(lambda f: f["type"] == "assistant_message")
                continue
            card = chat.card(kind="confirmation", release_id=rid)
            chat.expect(lambda f: f["type"] == "assistant_message")
            chat.act(card["id"], "confirm")
            done = chat.expect(decided(card["id"]))["card"]
            chat.expect(lambda f: f["type"] == "assistant_message")
            if role in action.allowed:
                assert done["state"] == "done", (action.name, role, done)
                fixtures.used(action)
            else:
                assert done["state"] == "failed", (action.name, role, done)
                assert "needs the" in done["outcome"] or "only" in done["outcome"], done
                after = snapshot(world)
                # The card itself was opened and closed; nothing else moved.
                assert {k: v for k, v in after.items() if k != "cards"} == {
                    k: v for k, v in before.items() if k != "cards"
                }, (action.name, role)
        for chat in clients.values():
            chat.close()


def test_batch_items_of_hidden_releases_read_like_missing_ones(
    world: World, client: TestClient
) -> None:
    rid = prepare(world, "pending")["release_id"]
    before = snapshot(world)
    response = client.post(
        "/api/v1/approvals/batch",
        json={"action": "approve", "release_ids": [rid, rid.lower(), "R-999999"]},
        headers={"Authorization": f"Bearer {world.tokens['frank']}"},
    )
    assert response.status_code == 200
    hidden, missing = response.json()["items"]  # R-n and r-n are one release, decided once
    assert hidden["error"] == {
        "code": "not_found",
        "message": f"no release {rid}",
        "details": {"release_id": rid},
    }
    assert missing["error"] == {
        "code": "not_found",
        "message": "no release R-999999",
        "details": {"release_id": "R-999999"},
    }
    assert snapshot(world) == before

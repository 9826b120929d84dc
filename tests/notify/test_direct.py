"""A ticket that times out reaches its requester directly: a Slack/Feishu DM to each linked
identity (real HTTP against a loopback API), and a `release_update` with the reason in every
chat session they have open."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

import pytest
from sqlalchemy import select

from agent.hub import Outbox
from core.db import utcnow
from core.notify.direct import DirectConfig
from core.notify.models import NotifyDelivery
from core.notify.worker import NotifyWorker
from tests.conftest import World, _settle
from tests.notify.receiver import Receiver, receiver
from tests.notify.test_deliveries import declare
from tests.support.calls import call, deploy, sql

IDENTITIES = """
notifications:
  - {{name: ops, kind: webhook, url: "{url}/hook", events: [ticket_timed_out]}}
identities:
  slack: {{U0ALICE: alice, U0BOB: bob}}
  feishu: {{ou_alice_42: alice}}
"""


@pytest.fixture
def api() -> Iterator[Receiver]:
    with receiver() as box:
        box.answers = {
            "/slack/chat.postMessage": {"ok": True, "channel": "D1", "ts": "1.2"},
            "/open-apis/auth/v3/tenant_access_token/internal": {
                "code": 0,
                "tenant_access_token": "t-tenant-7",
                "expire": 7200,
            },
            "/open-apis/im/v1/messages": {"code": 0, "msg": "success", "data": {}},
        }
        yield box


def _timed_out(world: World, submitted: Callable[[], object] = lambda: None) -> str:
    """alice's shop/prod release whose ticket waited 73 hours, swept: expired."""
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    submitted()
    sql(
        world,
        "UPDATE approval_tickets SET created_at = :t WHERE release_number = :n",
        t=(utcnow() - timedelta(hours=73)).replace(tzinfo=None).isoformat(sep=" "),
        n=int(release.id.removeprefix("R-")),
    )
    world.services.runner.sweep()
    assert call(world, "alice", "get_release", release_id=release.id).lifecycle_state == "expired"
    return str(release.id)


def _config(url: str) -> DirectConfig:
    return DirectConfig(
        slack_bot_token="xoxb-test-token",
        slack_api_url=f"{url}/slack/",
        feishu_app_id="cli_app",
        feishu_app_secret="app-secret",
        feishu_api_url=f"{url}/open-apis",
    )


def _body(received: Any) -> dict[str, Any]:
    text = received.body.decode()
    try:
        return dict(json.loads(text))
    except ValueError:  # form-encoded (slack_sdk sends some methods that way)
        return {k: v[0] for k, v in parse_qs(text).items()}


def test_the_requester_gets_a_dm_on_each_linked_platform_once(world: World, api: Receiver) -> None:
    declare(world, IDENTITIES.format(url=api.url))
    rid = _timed_out(world)
    worker = NotifyWorker(world.services.sessions, direct=_config(api.url))
    assert worker.run_once() == 3  # the route, alice's Slack and alice's Feishu; never bob
    got = {r.path.split("?")[0]: r for r in api.drain()}
    assert got["/hook"].json()["event"] == "ticket_timed_out"
    slack = got["/slack/chat.postMessage"]
    assert slack.headers["Authorization"] == "Bearer xoxb-test-token"
    message = _body(slack)
    assert message["channel"] == "U0ALICE"
    assert "Approval ticket timed out" in message["text"] and rid in message["text"]
    assert "approval timed out" in json.dumps(message["blocks"])
    token = got["/open-apis/auth/v3/tenant_access_token/internal"].json()
    assert token == {"app_id": "cli_app", "app_secret": "app-secret"}
    feishu = got["/open-apis/im/v1/messages"]
    assert feishu.headers["Authorization"] == "Bearer t-tenant-7"
    sent = feishu.json()
    assert sent["receive_id"] == "ou_alice_42" and sent["msg_type"] == "interactive"
    card = json.loads(sent["content"])
    assert "approval timed out" in json.dumps(card, ensure_ascii=False)
    assert not any(e.get("tag") == "action" for e in card["elements"])  # nothing to decide
    # Exactly once: a second round (or another worker) sends nothing again.
    assert worker.run_once() == 0 and NotifyWorker(world.services.sessions).run_once() == 0
    with world.services.sessions() as session:
        rows = session.scalars(select(NotifyDelivery).order_by(NotifyDelivery.route)).all()
        assert [(r.route, r.state) for r in rows] == [
            ("dm:feishu:ou_alice_42", "delivered"),
            ("dm:slack:U0ALICE", "delivered"),
            ("ops", "delivered"),
        ]


def test_without_platform_credentials_the_dm_is_logged_as_undeliverable(
    world: World, api: Receiver
) -> None:
    declare(world, IDENTITIES.format(url=api.url))
    _timed_out(world)
    NotifyWorker(world.services.sessions).run_once()
    assert [r.path for r in api.drain()] == ["/hook"]  # the route still gets it
    with world.services.sessions() as session:
        dms = session.scalars(select(NotifyDelivery).where(NotifyDelivery.route != "ops")).all()
        assert {(r.state, r.attempts) for r in dms} == {("dead", 1)}
        assert all("not configured" in (r.last_error or "") for r in dms)


def test_a_refusing_platform_is_retried_with_the_error_logged(world: World, api: Receiver) -> None:
    declare(world, IDENTITIES.format(url=api.url))
    api.answers["/slack/chat.postMessage"] = {"ok": False, "error": "channel_not_found"}
    _timed_out(world)
    NotifyWorker(world.services.sessions, direct=_config(api.url)).run_once()
    with world.services.sessions() as session:
        slack = session.scalars(
            select(NotifyDelivery).where(NotifyDelivery.route == "dm:slack:U0ALICE")
        ).one()
        assert slack.state == "pending" and slack.attempts == 1
        assert slack.last_error == "slack: channel_not_found"


def test_the_requesters_chat_sessions_hear_why_their_release_expired(world: World) -> None:
    hub = world.services.hub
    frames: dict[str, list[dict[str, Any]]] = {"one": [], "two": [], "bob": []}
    alice = world.actor("alice").user_id
    bob = world.actor("bob").user_id
    assert alice is not None and bob is not None
    boxes = [
        Outbox(alice, "one", frames["one"].append),
        Outbox(alice, "two", frames["two"].append),
        Outbox(bob, "bob", frames["bob"].append),
    ]
    for box in boxes:
        hub.register(box)
    try:
        # The approval cards open before the sweep (the hub reads the release when it handles
        # an event: after the sweep it would find it expired and open none).
        # On PostgreSQL the events reach the hub through the listener: wait for it too.
        rid = _timed_out(world, submitted=lambda: _settle(world.services))
        _settle(world.services)
    finally:
        for box in boxes:
            hub.unregister(box)
    for session_id in ("one", "two"):
        update = next(
            f
            for f in frames[session_id]
            if f["type"] == "release_update" and f["lifecycle_state"] == "expired"
        )
        assert update["release_id"] == rid and update["reason"] == "approval timed out"
    # bob is an approver of shop prod: his approval card closes with the real reason.
    closed = [f["card"] for f in frames["bob"] if f["type"] == "card"]
    assert closed and closed[-1]["state"] == "void" and "expired" in closed[-1]["outcome"]

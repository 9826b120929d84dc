"""Outgoing notifications: webhooks signed and retried, Slack and Feishu payloads, exactly once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from core.errors import InvalidInput
from core.notify.declaration import load_notifications, split_declaration
from core.notify.models import NotifyDelivery
from core.notify.worker import NotifyWorker
from core.permissions import SYSTEM
from tests.conftest import World
from tests.notify.receiver import Receiver, receiver
from tests.support import engine_events
from tests.support.calls import call, deploy, sql

SECRET = "s3cret-for-hooks"


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as box:
        yield box


def declare(world: World, text: str) -> None:
    rest, notify = split_declaration(text)
    assert notify is not None
    with world.services.sessions() as session:
        load_notifications(session, actor=SYSTEM, declaration=notify)


def routes(url: str, **extra: str) -> str:
    return f"""
notifications:
  - name: ops
    kind: webhook
    url: {url}/hook
    secret: {SECRET}
    projects: [shop]
    environments: [prod]
  - name: dev-only
    kind: webhook
    url: {url}/dev
    environments: [dev]
    events: [applied]
"""


def pending(world: World, user: str = "alice", tag: str = "1.5.0") -> str:
    release = deploy(world, user, "shop", "prod", web={"image_tag": tag})
    call(world, user, "submit_release", release_id=release.id)
    return str(release.id)


def worker(world: World, **kwargs: object) -> NotifyWorker:
    return NotifyWorker(world.services.sessions, public_url="https://deck.example/", **kwargs)  # type: ignore[arg-type]


def signed(received_body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), received_body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def test_webhook_gets_each_event_once_signed_with_a_link_back(world: World, hook: Receiver) -> None:
    declare(world, routes(hook.url))
    release = pending(world)
    notifier = worker(world)
    assert notifier.run_once() == 1
    first = hook.next()
    assert first.path == "/hook"
    assert signed(first.body, first.headers["X-Shipdeck-Signature"])
    body = first.json()
    assert body["event"] == "approval_needed" and body["release_id"] == release
    assert body["url"] == f"https://deck.example/#/releases/{release}"
    assert (body["project"], body["environment"], body["requested_by"]) == ("shop", "prod", "alice")
    assert first.headers["X-Shipdeck-Event"] == "approval_needed"
    # Nothing new: nothing sent again, by this worker or a fresh one (a restart).
    assert notifier.run_once() == 0 and worker(world).run_once() == 0
    assert hook.drain() == []
    call(world, "bob", "approve_release", release_id=release, comment="ship it 🚀")
    call(world, "alice", "apply_release", release_id=release)
    worker(world).run_once()
    # Waited for, not drained: another worker of this database (a server's, still stopping
    # from an earlier test) may have claimed one and be sending it right now.
    events = [hook.next().json()["event"] for _ in range(2)]
    assert sorted(events) == ["applied", "approved"]
    assert worker(world).run_once() == 0 and hook.drain() == []


def test_routes_filter_by_project_environment_and_event(world: World, hook: Receiver) -> None:
    declare(world, routes(hook.url))
    dev = deploy(world, "alice", "shop", "dev", web={"image_tag": "9"})
    call(world, "alice", "submit_release", release_id=dev.id)
    call(world, "alice", "apply_release", release_id=dev.id)
    other = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "2"})
    call(world, "alice", "submit_release", release_id=other.id)
    worker(world).run_once()
    got = hook.drain()
    assert [(r.path, r.json()["event"], r.json()["release_id"]) for r in got] == [
        ("/dev", "applied", dev.id)
    ]
    assert "X-Shipdeck-Signature" not in got[0].headers  # that route declares no secret


def test_a_failing_receiver_is_retried_with_backoff_and_logged(
    world: World, hook: Receiver
) -> None:
    declare(world, routes(hook.url))
    hook.statuses = [500, 503]
    pending(world)
    notifier = worker(world)
    notifier.run_once()
    with world.services.sessions() as session:
        row = session.scalars(select(NotifyDelivery)).one()
        assert (row.state, row.attempts, row.last_status) == ("pending", 1, 500)
        first_wait = row.next_attempt_at
    assert notifier.run_once() == 0  # not due yet: nothing is sent early
    sql(world, "UPDATE notify_deliveries SET next_attempt_at = created_at")  # time passes
    notifier.run_once()
    with world.services.sessions() as session:
        row = session.scalars(select(NotifyDelivery)).one()
        assert (row.state, row.attempts, row.last_error) == ("pending", 2, "HTTP 503")
        assert (row.next_attempt_at - first_wait).total_seconds() > 1  # 4 s after, not 2
    sql(world, "UPDATE notify_deliveries SET next_attempt_at = created_at")
    notifier.run_once()
    with world.services.sessions() as session:
        row = session.scalars(select(NotifyDelivery)).one()
        assert (row.state, row.attempts, row.last_status) == ("delivered", 3, 200)
        assert [entry["status"] for entry in row.log] == [500, 503, 200]
    assert len(hook.drain()) == 1


def test_a_receiver_that_never_answers_well_ends_dead(world: World, hook: Receiver) -> None:
    declare(world, routes(hook.url))
    hook.statuses = [500] * 3
    pending(world)
    notifier = worker(world, max_attempts=3)
    for _ in range(3):
        sql(world, "UPDATE notify_deliveries SET next_attempt_at = created_at")
        notifier.run_once()
    with world.services.sessions() as session:
        row = session.scalars(select(NotifyDelivery)).one()
        assert (row.state, row.attempts) == ("dead", 3)


def test_slack_and_feishu_routes_get_their_platform_payloads(world: World, hook: Receiver) -> None:
    declare(
        world,
        f"""
notifications:
  - {{name: slack, kind: slack, url: "{hook.url}/slack", projects: [shop]}}
  - {{name: feishu, kind: feishu, url: "{hook.url}/feishu", secret: bot-secret, projects: [shop]}}
""",
    )
    release = pending(world)
    worker(world).run_once()
    got = {r.path: r.json() for r in hook.drain()}
    slack = got["/slack"]
    assert "Approval needed" in slack["text"]
    actions = next(b for b in slack["blocks"] if b["type"] == "actions")
    assert [(e.get("action_id"), e.get("value")) for e in actions["elements"]] == [
        ("shipdeck_approve", release),
        ("shipdeck_reject", release),
        ("open", None),
    ]
    assert actions["elements"][2]["url"].endswith(f"#/releases/{release}")
    feishu = got["/feishu"]
    assert feishu["msg_type"] == "interactive"
    buttons = next(e for e in feishu["card"]["elements"] if e["tag"] == "action")["actions"]
    assert [b.get("value") for b in buttons[:2]] == [
        {"action": "approve", "release": release},
        {"action": "reject", "release": release},
    ]
    key = f"{feishu['timestamp']}\nbot-secret".encode()
    assert feishu["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def test_hostile_declarations_are_refused_with_the_reason() -> None:
    with pytest.raises(InvalidInput, match="unknown events"):
        split_declaration(
            "notifications: [{name: a, kind: webhook, url: 'http://x', events: [boom]}]"
        )
    with pytest.raises(InvalidInput, match="2000"):
        split_declaration(
            f"notifications: [{{name: a, kind: webhook, url: 'http://{'x' * 10000}'}}]"
        )
    with pytest.raises(InvalidInput, match="route name"):
        split_declaration("notifications: [{name: '🚀', kind: webhook, url: 'http://x'}]")
    with pytest.raises(InvalidInput, match="share a name"):
        split_declaration(
            "notifications: [{name: a, kind: slack, url: 'http://x'}, "
            "{name: a, kind: webhook, url: 'http://y'}]"
        )
    with pytest.raises(InvalidInput):
        split_declaration("identities: {teams: {U1: bob}}")
    rest, notify = split_declaration("projects: []\nidentities: {slack: {U1: bob}}\n")
    assert notify is not None and notify.identities == {"slack": {"U1": "bob"}}
    assert "identities" not in rest


@pytest.mark.postgres
def test_two_workers_on_postgresql_deliver_each_event_exactly_once(
    pg_services: object, hook: Receiver
) -> None:
    from tests.conftest import build_world

    world = build_world(pg_services)  # type: ignore[arg-type]
    declare(
        world,
        f"""
notifications:
  - {{name: a, kind: webhook, url: "{hook.url}/a"}}
  - {{name: b, kind: webhook, url: "{hook.url}/b"}}
""",
    )
    for n in range(6):  # each new release supersedes the last: cancelled events too
        release = pending(world, tag=f"2.{n}")
        if n % 2:
            call(world, "bob", "approve_release", release_id=release)
    start = threading.Barrier(2)
    tried: list[int] = []

    def run(notifier: NotifyWorker) -> None:
        start.wait()
        while True:
            count = notifier.run_once()
            tried.append(count)
            if not count:
                break

    threads = [threading.Thread(target=run, args=(worker(world, name=f"w{i}"),)) for i in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    got = hook.drain()
    keys = [(r.path, r.json()["audit_seq"]) for r in got]
    with world.services.sessions() as session:
        rows = list(session.scalars(select(NotifyDelivery)))
    assert len(rows) >= 2 * (6 + 3)  # approval needed x6, approved x3, on both routes
    assert len(keys) == len(set(keys)) == len(rows)
    assert {r.state for r in rows} == {"delivered"}
    assert {r.claimed_by for r in rows} == {None}
    assert {r.attempts for r in rows} == {1}


def test_the_server_worker_thread_sends_after_commit(world: World, hook: Receiver) -> None:
    from tests.support.server import running_server

    declare(world, routes(hook.url))
    with running_server(world.services):
        release = pending(world)  # the commit's live event wakes the server's worker
        received = hook.next(timeout=15)
    assert received.json()["release_id"] == release
    assert received.json()["event"] == "approval_needed"


def test_a_claim_left_by_a_dead_replica_is_sent_by_another_once(
    world: World, hook: Receiver
) -> None:
    from core.notify.worker import claim, deliver, fan_out

    declare(world, routes(hook.url))
    pending(world)
    with world.services.sessions() as session:
        assert fan_out(session) == 1
    with world.services.sessions() as session:
        [claimed] = claim(session, "dead-replica")
    with world.services.sessions() as session:
        assert claim(session, "other") == []  # a live lease is respected
    sql(world, "UPDATE notify_deliveries SET claimed_until = created_at")  # the lease runs out
    assert worker(world, name="other").run_once() == 1
    assert len(hook.drain()) == 1
    late = deliver(
        world.services.sessions, claimed, "dead-replica", public_url=None, max_attempts=8
    )
    assert late == "lost" and hook.drain() == []


def test_the_delivery_log_over_rest_is_for_admins(world: World, hook: Receiver) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from core.config import Settings

    declare(world, routes(hook.url))
    hook.statuses = [502]
    release = pending(world)
    worker(world).run_once()
    settings = Settings(database_url=str(world.services.engine.url), migrate_on_start=False)
    client = TestClient(create_app(settings, world.services))  # no lifespan: no worker thread

    def get(user: str, **params: str) -> Any:
        headers = {"Authorization": f"Bearer {world.tokens[user]}"}
        return client.get("/api/v1/integrations/deliveries", headers=headers, params=params)

    page = get("admin").json()
    [item] = page["items"]
    assert (item["route"], item["event"], item["release_id"]) == ("ops", "approval_needed", release)
    assert (item["state"], item["attempts"], item["last_error"]) == ("pending", 1, "HTTP 502")
    assert item["log"][0]["status"] == 502
    assert get("admin", state="dead").json()["items"] == []
    assert get("admin", state="🚀" * 1000).status_code == 422
    assert get("bob").status_code == 403


def test_a_burst_of_pokes_runs_rounds_at_most_every_gap(world: World) -> None:
    """Every live event pokes the worker; a steady stream must not run a round per event."""
    rounds: list[float] = []
    began = threading.Event()

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # a round's first statement reads the fan-out cursor
        if threading.current_thread().name == "shipdeck-notify" and "audit_sinks" in statement:
            rounds.append(time.monotonic())
            began.set()

    notifier = worker(world, poll_seconds=60)
    engine_events.listen(world.services.engine, "before_cursor_execute", record)
    notifier.start()
    try:
        for _ in range(5):  # each poke once the last round has begun: one round per poke
            assert began.wait(10)
            began.clear()
            notifier.poke()
        assert began.wait(10)
    finally:
        notifier.stop()
        engine_events.remove(world.services.engine, "before_cursor_execute", record)
    gaps = [b - a for a, b in zip(rounds, rounds[1:], strict=False)]
    assert len(gaps) >= 5 and min(gaps) >= NotifyWorker.min_gap_seconds * 0.95, gaps

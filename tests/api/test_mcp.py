"""The MCP door, through the SDK's real client: `shipdeck mcp` over stdio, and `/mcp` over
streamable HTTP on a running server.

Each test runs its own event loop (`anyio.run`) so nothing is shared with other async
fixtures; the server process/uvicorn is started once per module.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from sqlalchemy import select

from api.wiring import Services
from core.audit.models import AccessRecord, AuditEvent
from core.config import Settings
from core.db import utcnow
from core.flows.views import get_release
from core.turns import holding
from runtimes.base import ServiceChange, ServiceSpec
from runtimes.sandbox import SandboxAdapter
from tests.api.test_call_turns import Occupied, wait_until
from tests.cli.test_cli import SHIPDECK
from tests.conftest import World, _services_for, _wipe, build_world, service_unavailable
from tests.support import engine_events
from tests.support.server import running_server
from tools.registry import REGISTRY

REPO = Path(__file__).resolve().parents[2]
WEB = {"web": {"image_tag": "1.4.2"}}

Answer = tuple[str, bool | None]
# An answer, or something the "user" does while the question is open, then their answer.
Answers = list[Answer | Callable[[str], Answer]]


@dataclass
class Door:
    """How to reach one MCP door as one user."""

    world: World
    connect: Callable[..., Client]


def elicitation(answers: Answers, asked: list[str]) -> Any:
    """A client callback answering the server's questions in order, keeping what it asked."""

    async def callback(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        answer = answers.pop(0)
        action, confirm = answer(params.message) if callable(answer) else answer
        content = {"confirm": confirm} if confirm is not None else None
        return types.ElicitResult(action=action, content=content)

    return callback


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    """Run one scenario in a fresh event loop of its own."""
    return anyio.run(scenario)


def audit_channels(services: Services, tool: str) -> list[tuple[str, str]]:
    with services.sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        return [
            (e.action, e.channel)
            for e in events
            if (e.data or {}).get("tool") == tool or e.action in ("submit", "apply", "cancel")
        ]


# ---------------------------------------------------------------- stdio


@pytest.fixture(scope="module")
def stdio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    """A world on a SQLite file; each client spawns `shipdeck mcp` as a user of it."""
    assert SHIPDECK
    url = f"sqlite:///{tmp_path_factory.mktemp('mcp') / 'mcp.db'}"
    services = Services.build(Settings(database_url=url), inline_apply=True)
    services.migrate()
    world = build_world(services)

    def connect(user: str, answers: Answers | None = None, asked: list[str] | None = None):
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SHIPDECK_DATABASE_URL": url,
            "SHIPDECK_TOKEN": world.tokens[user],
            "SHIPDECK_PUBLIC_URL": "https://shipdeck.example",
        }
        params = StdioServerParameters(command=SHIPDECK, args=["mcp"], env=env)
        callback = elicitation(answers, asked if asked is not None else []) if answers else None
        # The handshake era, as today's desktop agents speak it: elicitation is a request
        # from the server in the middle of the tool call.
        return Client(params, mode="legacy", elicitation_callback=callback)

    yield Door(world, connect)
    services.close()


def check_listing(listed_tools: list[types.Tool]) -> None:
    """Every registry tool, with the registry's schema and description, and its hints."""
    tools = {t.name: t for t in listed_tools}
    assert set(tools) == set(REGISTRY)
    for name, tool in REGISTRY.items():
        listed = tools[name]
        assert listed.description == tool.description
        assert listed.input_schema == tool.input_model.model_json_schema()
        assert listed.annotations is not None
        assert listed.annotations.read_only_hint is (not tool.mutating)
        if tool.mutating:
            assert listed.annotations.destructive_hint is True
        else:
            assert listed.output_schema == tool.output_model.model_json_schema()


def test_stdio_tools_read_preview_and_refused_apply(stdio: Door) -> None:
    """Tools are listed; a read runs; a preview runs and says what is next; apply without
    elicitation is refused with the console link."""

    async def scenario() -> tuple[Any, Any, Any, Any]:
        async with stdio.connect("alice") as client:
            check_listing((await client.list_tools()).tools)
            targets = await client.call_tool("list_targets", {"project": "shop"})
            preview = await client.call_tool(
                "preview_release", {"project": "shop", "environment": "prod", "changes": WEB}
            )
            rid = preview.structured_content["release"]["id"]
            apply = await client.call_tool("apply_release", {"release_id": rid})
            bad = await client.call_tool("apply_release", {"release_id": "R-99999"})
            return targets, preview, apply, bad

    targets, preview, apply, bad = run(scenario)
    assert not targets.is_error
    assert [t["environment"] for t in targets.structured_content["items"]] == [
        "dev",
        "staging",
        "prod",
    ]

    out = preview.structured_content
    assert not preview.is_error and out["status"] == "previewed"
    assert out["ran"] == ["preview_release"]
    release = out["release"]
    assert release["lifecycle_state"] == "previewed" and release["channel"] == "mcp"
    assert release["preview"]["diff"]["web"]["image"]["after"] == "shop/web:1.4.2"
    assert release["preview"]["risk"]["tier"] == "high"
    assert out["next"]["action"] == "submit_release" and out["next"]["needs_approval"] is True
    assert out["next"]["who"] == ["alice"]
    assert "erin" in out["next"]["message"] and "alice" in out["next"]["message"]
    assert out["console_url"] == f"https://shipdeck.example/#/releases/{release['id']}"
    assert "cannot ask you to confirm" in out["message"]

    assert apply.is_error
    refused = apply.structured_content
    assert refused["status"] == "confirmation_required" and refused["ran"] == []
    assert refused["console_url"] == out["console_url"]
    assert "https://shipdeck.example/#/releases/" in apply.content[0].text

    assert bad.is_error and bad.structured_content["error"]["code"] == "not_found"

    with stdio.world.services.sessions() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        mine = [
            (e.action, e.channel, (e.data or {}).get("tool")) for e in events if e.channel == "mcp"
        ]
        # Reads go to the access log (outside the chain), on the door they came through.
        reads = session.scalars(select(AccessRecord).where(AccessRecord.channel == "mcp")).all()
    assert ("alice", "list_targets") in [(r.actor, r.tool) for r in reads]
    assert ("preview", "mcp", None) in mine
    assert ("refused", "mcp", "apply_release") in mine
    assert not any(action in ("submit", "apply") for action, _, _ in mine)


def test_stdio_elicitation_accept_submits_and_decline_withdraws(stdio: Door) -> None:
    asked: list[str] = []
    world = stdio.world

    def meddle(question: str) -> Answer:
        """While alice is asked, the live state moves and the release is re-previewed."""
        rid = question.split()[1]
        adapter = world.services.runtimes.get("sandbox")
        assert isinstance(adapter, SandboxAdapter)
        target = world.target_id("shop", "prod")
        adapter.set_live(target, "web", ServiceSpec(image="shop/web:1.3.9"))
        REGISTRY["repreview_release"].run(
            world.services.context(world.actor("alice")), {"release_id": rid}
        )
        return ("accept", True)

    answers: Answers = [("accept", True), ("decline", None), ("accept", False), meddle]

    async def scenario() -> list[Any]:
        async with stdio.connect("alice", answers, asked) as client:
            results = []
            for env in ("dev", "staging", "staging", "prod"):
                results.append(
                    await client.call_tool(
                        "preview_release",
                        {"project": "shop", "environment": env, "changes": WEB},
                    )
                )
            return results

    accepted, declined, unticked, moved = (r.structured_content for r in run(scenario))
    assert len(asked) == 4 and asked[0].startswith("Submit R-")
    assert "web.image: shop/web:1.4.1 -> shop/web:1.4.2" in asked[0]
    assert "Risk" in asked[0]

    assert accepted["status"] == "done"
    assert accepted["ran"] == ["preview_release", "submit_release"]
    assert accepted["release"]["lifecycle_state"] == "approved"
    assert accepted["next"]["action"] == "apply_release"

    assert declined["status"] == "declined"
    assert declined["ran"] == ["preview_release", "cancel_release"]
    assert declined["release"]["lifecycle_state"] == "cancelled"
    # Accepting the form without ticking "confirm" is no confirmation.
    assert unticked["status"] == "declined"
    assert unticked["release"]["lifecycle_state"] == "cancelled"
    # The diff alice was shown is not the diff any more: her "yes" does not submit the new one.
    assert moved["error"]["code"] == "conflict" and "changed while" in moved["error"]["message"]
    rid = asked[3].split()[1]
    with world.services.sessions() as session:
        now = get_release(session, actor=world.actor("alice"), release=rid)
    assert now.lifecycle_state == "previewed"
    assert now.preview is not None and now.preview.diff["web"]["image"].before == "shop/web:1.3.9"


def test_stdio_refuses_to_start_with_an_unknown_token(stdio: Door, tmp_path: Path) -> None:
    import subprocess

    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SHIPDECK_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "SHIPDECK_TOKEN": "sd_" + "🚀" * 20,
    }
    done = subprocess.run(
        [sys.executable, "-c", "from api.cli import app; app()", "mcp"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1 and "unknown" in done.stderr and "revoked" in done.stderr
    assert done.stdout == ""  # stdout is the protocol channel: nothing else may go there


# ---------------------------------------------------------------- streamable HTTP


@pytest.fixture(scope="module")
def http(request: pytest.FixtureRequest) -> Iterator[Door]:
    """One uvicorn serving the API (and /mcp) on PostgreSQL for the whole module."""
    url = request.getfixturevalue("postgres_url")
    if url is None:
        service_unavailable("PostgreSQL is not available (no initdb/pg_ctl, no test URL)")
    services = _services_for(str(url))
    _wipe(services)
    world = build_world(services)
    with running_server(services) as address:
        base = f"http://{address}"

        def connect(
            user: str,
            answers: Answers | None = None,
            asked: list[str] | None = None,
            mode: str = "auto",
        ):
            headers = {"Authorization": f"Bearer {world.tokens[user]}"}
            transport = streamable_http_client(f"{base}/mcp", http_client=httpx_client(headers))
            callback = elicitation(answers, asked if asked is not None else []) if answers else None
            return Client(transport, elicitation_callback=callback, mode=mode)

        door = Door(world, connect)
        door.base = base  # type: ignore[attr-defined]
        yield door


def httpx_client(headers: dict[str, str]) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(headers=headers, timeout=30)


def test_http_needs_a_valid_bearer_token(http: Door) -> None:
    base = http.base  # type: ignore[attr-defined]
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    for headers in ({}, {"Authorization": "Bearer sd_nope"}, {"Authorization": "Basic eA=="}):
        answer = httpx2.post(
            f"{base}/mcp",
            json=body,
            headers={**headers, "Accept": "application/json, text/event-stream"},
        )
        assert answer.status_code == 401, headers
        assert "invalid_token" in answer.headers["www-authenticate"]


def test_http_read_preview_refusals_and_elicitation_round_trip(http: Door) -> None:
    asked: list[str] = []

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with http.connect("alice") as client:
            out["tools"] = (await client.list_tools()).tools
            out["read"] = await client.call_tool("get_release", {"release_id": "R-1"})
            out["preview"] = await client.call_tool(
                "preview_release", {"project": "shop", "environment": "prod", "changes": WEB}
            )
            rid = out["preview"].structured_content["release"]["id"]
            out["submit"] = await client.call_tool("submit_release", {"release_id": rid})
        async with http.connect("victor") as client:  # a viewer: refused before any question
            out["viewer"] = await client.call_tool("submit_release", {"release_id": rid})
        async with http.connect("alice", [("accept", True)], asked) as client:
            out["confirmed"] = await client.call_tool("submit_release", {"release_id": rid})
        async with http.connect("erin", [("decline", None), ("accept", True)], asked) as client:
            out["era"] = client.protocol_version
            out["approve_declined"] = await client.call_tool("approve_release", {"release_id": rid})
            out["approved"] = await client.call_tool("approve_release", {"release_id": rid})
        async with http.connect("alice") as client:
            out["apply"] = await client.call_tool("apply_release", {"release_id": rid})
        # The handshake era over HTTP: the question travels on the call's own event stream.
        async with http.connect("alice", [("accept", True)], asked, mode="legacy") as client:
            out["legacy_era"] = client.protocol_version
            out["applied"] = await client.call_tool("apply_release", {"release_id": rid})
        return out

    out = run(scenario)
    check_listing(out["tools"])
    assert out["read"].is_error and out["read"].structured_content["error"]["code"] == "not_found"

    preview = out["preview"].structured_content
    rid = preview["release"]["id"]
    base = http.base  # type: ignore[attr-defined]
    assert preview["status"] == "previewed" and preview["console_url"] == f"{base}/#/releases/{rid}"

    submit = out["submit"]
    assert submit.is_error and submit.structured_content["status"] == "confirmation_required"

    viewer = out["viewer"]
    assert viewer.is_error
    assert viewer.structured_content["error"]["code"] == "permission_denied"

    confirmed = out["confirmed"].structured_content
    assert confirmed["status"] == "done" and confirmed["ran"] == ["submit_release"]
    assert confirmed["release"]["lifecycle_state"] == "pending_approval"
    waiting = confirmed["next"]
    assert waiting["action"] == "approve_release" and waiting["needs_approval"] is True
    # Who core says may decide the step: the project's approvers, never the requester.
    assert "erin" in waiting["who"] and "alice" not in waiting["who"]
    assert "erin" in waiting["message"]

    assert out["approve_declined"].structured_content["status"] == "declined"
    assert out["approve_declined"].structured_content["release"]["lifecycle_state"] == (
        "pending_approval"
    )
    approved = out["approved"].structured_content
    assert approved["status"] == "done" and approved["release"]["lifecycle_state"] == "approved"
    assert approved["release"]["approval"]["decisions"][0]["channel"] == "mcp"

    apply = out["apply"]
    assert apply.is_error and apply.structured_content["status"] == "confirmation_required"
    assert apply.structured_content["release"]["lifecycle_state"] == "approved"

    # Auto negotiation picks the 2026-07-28 era: elicitation comes back as input_required.
    assert out["era"] == "2026-07-28" and out["legacy_era"] in HANDSHAKE_PROTOCOL_VERSIONS
    applied = out["applied"].structured_content
    assert applied["status"] == "done" and applied["ran"] == ["apply_release"]
    assert applied["release"]["lifecycle_state"] in ("applying", "applied")

    assert asked[0].startswith(f"Submit {rid}?") and asked[1].startswith(f"Approve {rid}?")
    assert asked[3].startswith(f"Apply {rid}?")
    with http.world.services.sessions() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.channel == "mcp").order_by(AuditEvent.seq)
        ).all()
        actions = [(e.action, e.actor) for e in events]
    assert ("submit", "alice") in actions and ("approve", "erin") in actions
    assert ("declined", "erin") in actions and ("refused", "victor") in actions
    assert actions.count(("confirmation_requested", "erin")) == 2  # asked twice: no, then yes
    assert [a for a, _ in actions].count("apply") == 1


def test_http_hostile_calls_are_refused_as_tool_errors(http: Door) -> None:
    """Bad input comes back as a tool error the model can read; nothing runs, nothing leaks."""
    with http.world.services.sessions() as session:
        from core.flows.preview import preview_release

        other = preview_release(
            session,
            actor=http.world.actor("alice"),
            runtimes=http.world.services.runtimes,
            project="payment",
            environment="prod",
            changes={"gateway": ServiceChange(image_tag="9.9.9")},
        )

    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("alice", "no_such_tool", {}),
        ("alice", "preview_release", {"project": "🚀" * 10_000, "environment": "prod"}),
        ("alice", "preview_release", {"project": "shop", "environment": "prod", "changes": 7}),
        ("alice", "apply_release", {"release_id": "R-1; DROP TABLE releases"}),
        ("alice", "list_releases", {"limit": "many"}),
        # Victor views shop only: payment's release does not exist for him.
        ("victor", "get_release", {"release_id": other.id}),
        ("victor", "approve_release", {"release_id": other.id}),
        ("bob", "cancel_release", {"release_id": other.id}),
        # A requester never approves their own release: refused before anyone is asked.
        ("alice", "approve_release", {"release_id": other.id}),
    ]

    async def scenario() -> list[Any]:
        results = []
        for user, tool, args in calls:
            async with http.connect(user, [("accept", True)]) as client:
                results.append(await client.call_tool(tool, args))
        return results

    results = run(scenario)
    codes = [r.structured_content["error"]["code"] for r in results]
    assert all(r.is_error for r in results)
    assert codes[:5] == ["not_found", "invalid_input", "invalid_input", "invalid_input"] + [
        "invalid_input"
    ]
    assert codes[5] in ("not_found", "permission_denied")
    assert codes[6] in ("not_found", "permission_denied")
    assert codes[7] in ("not_found", "permission_denied")
    assert codes[8] == "permission_denied"
    assert len(results[1].content[0].text) < 2_000  # the 40 kB project name is not echoed back
    with http.world.services.sessions() as session:
        state = get_release(session, actor=http.world.actor("alice"), release=other.id)
    assert state.lifecycle_state == "previewed"


def test_http_session_belongs_to_the_token_that_opened_it(http: Door) -> None:
    """Another user's token cannot ride an open session (nor answer its questions)."""
    base = http.base  # type: ignore[attr-defined]
    accept = {"Accept": "application/json, text/event-stream"}
    alice = {"Authorization": f"Bearer {http.world.tokens['alice']}", **accept}
    victor = {"Authorization": f"Bearer {http.world.tokens['victor']}", **accept}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    opened = httpx2.post(f"{base}/mcp", json=init, headers=alice)
    assert opened.status_code == 200
    session = opened.headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    for who, status in ((victor, 404), (alice, 200)):
        headers = {**who, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
        answer = httpx2.post(f"{base}/mcp", json=listing, headers=headers)
        assert answer.status_code == status


def test_http_revoking_a_token_closes_its_open_session(http: Door) -> None:
    from core.identity.models import User
    from core.identity.service import ensure_user
    from core.identity.tokens import issue_token, revoke_labelled
    from core.permissions import SYSTEM

    services = http.world.services
    with services.sessions() as session:
        token = issue_token(session, ensure_user(session, "mallory"), label="laptop")
        session.commit()
    base = http.base  # type: ignore[attr-defined]

    async def scenario() -> tuple[Any, BaseException | None]:
        client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        failure: BaseException | None = None
        async with Client(streamable_http_client(f"{base}/mcp", http_client=client)) as mcp:
            first = await mcp.call_tool("list_targets", {})
            with services.sessions() as session:
                user = session.scalars(select(User).where(User.name == "mallory")).one()
                revoke_labelled(session, actor=SYSTEM, user=user, label="laptop")
                session.commit()
            try:
                await mcp.call_tool("list_targets", {})
            except Exception as exc:  # the SDK surfaces the 401 as an error, not a result
                failure = exc
        return first, failure

    first, failure = run(scenario)
    assert not first.is_error and first.structured_content == {"items": []}  # no grants
    assert isinstance(failure, MCPError), "a revoked token still works"


def test_the_app_can_start_twice_and_mcp_answers_each_time(stdio: Door) -> None:
    """The MCP session manager belongs to one lifespan; a restarted app gets a new one."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    services = stdio.world.services
    app = create_app(Settings(database_url=str(services.engine.url)), services)
    headers = {
        "Authorization": f"Bearer {stdio.world.tokens['alice']}",
        "Accept": "application/json, text/event-stream",
    }
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"},
        },
    }
    for _ in range(2):
        with TestClient(app) as client:
            answer = client.post("/mcp", json=init, headers=headers)
            assert answer.status_code == 200
            assert '"serverInfo"' in answer.text and "shipdeck" in answer.text


def test_http_a_yes_to_a_diff_that_changed_meanwhile_runs_nothing(http: Door) -> None:
    """2026-07-28 era: the answer comes back with the retried call; the diff is checked again."""
    world = http.world

    def meddle(question: str) -> Answer:
        rid = question.split()[1]
        adapter = world.services.runtimes.get("sandbox")
        assert isinstance(adapter, SandboxAdapter)
        target = world.target_id("shop", "staging")
        adapter.set_live(target, "web", ServiceSpec(image="shop/web:0.9.0"))
        REGISTRY["repreview_release"].run(
            world.services.context(world.actor("alice")), {"release_id": rid}
        )
        return ("accept", True)

    asked: list[str] = []

    async def scenario() -> Any:
        async with http.connect("alice", [meddle], asked) as client:
            assert client.protocol_version == "2026-07-28"
            return await client.call_tool(
                "preview_release", {"project": "shop", "environment": "staging", "changes": WEB}
            )

    result = run(scenario)
    assert result.is_error and result.structured_content["error"]["code"] == "conflict"
    rid = asked[0].split()[1]
    with world.services.sessions() as session:
        now = get_release(session, actor=world.actor("alice"), release=rid)
    assert now.lifecycle_state == "previewed"  # not submitted on a "yes" to another diff


def test_stdio_freeze_tools_need_the_users_confirmation_and_the_freezer_role(
    stdio: Door,
) -> None:
    """A freeze is confirmed by elicitation like a submit; without it nothing runs, a decline
    runs nothing, a non-freezer is refused before being asked; retry and promote preview."""
    asked: list[str] = []
    day = (utcnow() + timedelta(days=10)).date()
    until = f"{day.isoformat()}T09:00"
    in_utc = datetime.fromisoformat(until).replace(tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC)
    freeze = {
        "project": "shop",
        "environment": "staging",
        "until": until,
        "timezone": "Europe/Berlin",
        "reason": "incident 42 🔥",
    }

    async def as_alice() -> Any:
        async with stdio.connect("alice", [("accept", True)], asked) as client:
            return await client.call_tool("declare_freeze", freeze)

    async def as_carol() -> list[Any]:
        answers: Answers = [("accept", True), ("decline", None), ("accept", True)]
        async with stdio.connect("carol", answers, asked) as client:
            made = await client.call_tool("declare_freeze", freeze)
            listed = await client.call_tool("list_freezes", {"project": "shop"})
            lift = {"project": "shop", "environment": "staging"}
            declined = await client.call_tool("lift_freeze", lift)
            lifted = await client.call_tool("lift_freeze", lift)
            return [made, listed, declined, lifted]

    async def without_elicitation() -> Any:
        async with stdio.connect("carol") as client:
            return await client.call_tool("declare_freeze", freeze)

    refused = run(as_alice)
    assert refused.is_error and refused.structured_content["error"]["code"] == "permission_denied"
    assert asked == []  # never asked what they may not do

    unconfirmed = run(without_elicitation).structured_content
    assert unconfirmed["status"] == "confirmation_required" and unconfirmed["ran"] == []

    made, listed, declined, lifted = (r.structured_content for r in run(as_carol))
    assert asked[0] == (
        f"Freeze shop/staging until {day} 09:00 (Europe/Berlin): incident 42 🔥?\n\n"
        "Submit and apply are refused on it until then (an emergency rollback may pass)."
    )
    assert made["status"] == "done" and made["ran"] == ["declare_freeze"]
    assert made["result"]["created_by"] == "carol"
    # 09:00 in Berlin is 08:00 or 07:00 UTC: the zone the user was shown is the one applied.
    assert datetime.fromisoformat(made["result"]["until"]) == in_utc
    assert [f["id"] for f in listed["items"]] == [made["result"]["id"]]
    assert declined["status"] == "declined" and declined["ran"] == []
    assert lifted["status"] == "done" and lifted["result"]["items"][0]["active"] is False
    assert len(asked) == 3 and asked[1].startswith("Lift the freeze on shop/staging?")
    with stdio.world.services.sessions() as session:
        actions = [
            e.action
            for e in session.scalars(select(AuditEvent).order_by(AuditEvent.seq))
            if e.channel == "mcp" and e.actor in ("alice", "carol")
        ]
    assert actions.count("freeze") == 1 and actions.count("lift_freeze") == 1
    assert "declined" in actions and "confirmation_requested" in actions


def test_stdio_retry_and_promote_run_as_previews_and_ask_to_submit(stdio: Door) -> None:
    world = stdio.world
    ctx = world.services.context(world.actor("alice"))
    made = REGISTRY["preview_release"].run(
        ctx, {"project": "shop", "environment": "dev", "changes": {"api": {"image_tag": "2.2.0"}}}
    )
    REGISTRY["submit_release"].run(ctx, {"release_id": made.id})
    REGISTRY["apply_release"].run(ctx, {"release_id": made.id})
    world.services.runner.drain()

    async def scenario() -> list[Any]:
        async with stdio.connect("alice") as client:
            promoted = await client.call_tool(
                "promote_release",
                {"project": "shop", "from_environment": "dev", "to_environment": "staging"},
            )
            retried = await client.call_tool("retry_release", {"release_id": made.id})
            return [promoted, retried]

    promoted, retried = (r.structured_content for r in run(scenario))
    assert promoted["status"] == "previewed" and promoted["ran"] == ["promote_release"]
    assert promoted["release"]["changes"]["api"] == {"image": "shop/api:2.2.0"}
    assert promoted["next"]["action"] == "submit_release"
    # R applied fine: there is nothing to retry, and core says so.
    assert retried["error"]["code"] == "illegal_transition"


def test_http_calls_wait_for_a_turn_like_rest_calls(http: Door) -> None:
    """PostgreSQL: an MCP call's database work takes one of the process's turns too."""
    turns = http.world.services.turns
    assert turns is not None
    results: list[Any] = []

    async def read() -> None:
        async with http.connect("alice") as client:
            results.append(await client.call_tool("list_releases", {"project": "shop"}))

    statements: list[tuple[bool, str]] = []  # the door's threads: in a turn, and what ran

    def executing(connection: Any, cursor: Any, statement: str, *_: Any) -> None:
        if threading.current_thread().name.startswith("AnyIO worker"):
            statements.append((holding(), statement[:60]))

    caller = threading.Thread(target=anyio.run, args=(read,))
    engine = http.world.services.engine
    engine_events.listen(engine, "before_cursor_execute", executing)
    try:
        with Occupied(turns) as held:
            caller.start()
            assert wait_until(lambda: turns.waiting == 1), "the MCP call took no turn"
            assert not results
            held.release.set()
            caller.join(30)
    finally:
        engine_events.remove(engine, "before_cursor_execute", executing)
    (result,) = results
    assert not result.is_error, result
    # the token lookup on every HTTP request, and the call itself
    assert any("api_tokens" in text for _, text in statements), statements
    assert all(held for held, _ in statements), statements
    assert turns.running == 0 and turns.waiting == 0

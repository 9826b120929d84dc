"""API tokens: listed, issued with an expiry, revoked; every issue and revocation audited;
only hashes stored; nobody but an admin (or the owner, for their own) touches a token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner, Result

from api.cli import app
from core.config import get_settings
from core.errors import InvalidInput
from core.identity.tokens import hash_token, parse_expiry
from tests.conftest import WORLD, World
from tests.security.conftest import Api
from tests.support.calls import sql


def _audit(world: World, action: str) -> list[dict[str, object]]:
    with world.services.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT actor, data FROM audit_events WHERE action = :a ORDER BY seq"),
            {"a": action},
        ).all()
    return [
        {"actor": actor, **(data if isinstance(data, dict) else json.loads(data))}
        for actor, data in rows
    ]


def test_admin_issues_lists_and_revokes_and_every_step_is_audited(api: Api, world: World) -> None:
    issued = api.post(
        "/api/v1/tokens",
        user="admin",
        json={"user": "alice", "label": "ci 🚀", "expires_in_seconds": 3600},
    )
    assert issued.status_code == 201, issued.text
    body = issued.json()
    secret, details = body["token"], body["details"]
    assert secret.startswith("sd_") and details["user"] == "alice" and details["active"]
    assert secret.startswith(details["hint"]) and len(details["hint"]) < 12
    expires = datetime.fromisoformat(details["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)

    # The new token works, and only its hash is stored.
    assert (
        api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).json()["name"]
        == "alice"
    )
    stored = {r[0] for r in sql(world, "SELECT token_hash FROM api_tokens")}
    assert hash_token(secret) in stored and secret not in stored

    listed = api.get("/api/v1/tokens", user="admin", params={"user": "alice"}).json()["items"]
    assert [t["id"] for t in listed][0] == details["id"]
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert secret not in json.dumps(listed)

    revoked = api.post(f"/api/v1/tokens/{details['id']}/revoke", user="admin")
    assert (
        revoked.status_code == 200 and revoked.json()["revoked_at"] and not revoked.json()["active"]
    )
    refused = api.client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert refused.status_code == 401
    again = api.post(f"/api/v1/tokens/{details['id']}/revoke", user="admin")
    assert again.status_code == 200  # idempotent, audited once

    assert [e["token_id"] for e in _audit(world, "token_issued")] == [details["id"]]
    revocations = _audit(world, "token_revoked")
    assert [(e["actor"], e["token_id"], e["user"]) for e in revocations] == [
        ("admin", details["id"], "alice")
    ]
    assert secret not in json.dumps(_audit(world, "token_issued"))
    active = api.get("/api/v1/tokens", user="admin", params={"user": "alice"}).json()["items"]
    assert details["id"] not in [t["id"] for t in active]
    everything = api.get(
        "/api/v1/tokens", user="admin", params={"user": "alice", "include_inactive": True}
    ).json()["items"]
    assert details["id"] in [t["id"] for t in everything]


def test_an_expired_token_stops_working(api: Api, world: World) -> None:
    issued = api.post(
        "/api/v1/tokens", user="admin", json={"user": "bob", "expires_in_seconds": 60}
    ).json()
    secret = issued["token"]
    auth = {"Authorization": f"Bearer {secret}"}
    assert api.client.get("/api/v1/me", headers=auth).status_code == 200
    # Time passes (what only a clock would do): the expiry moves into the past.
    sql(
        world,
        "UPDATE api_tokens SET expires_at = :at WHERE id = :id",
        at=(datetime.now(UTC) - timedelta(seconds=1)).replace(tzinfo=None),
        id=issued["details"]["id"],
    )
    answer = api.client.get("/api/v1/me", headers=auth)
    assert answer.status_code == 401 and "expired" in answer.json()["error"]["message"]


def test_non_admins_see_and_revoke_only_their_own(api: Api, world: World) -> None:
    mine = api.get("/api/v1/tokens", user="alice").json()["items"]
    assert mine and {t["user"] for t in mine} == {"alice"}
    everyone = api.get("/api/v1/tokens", user="admin").json()["items"]
    assert {"alice", "bob", "admin"} <= {t["user"] for t in everyone}
    bobs = next(t for t in everyone if t["user"] == "bob")
    # Another user's token: the same answer as a token that does not exist.
    assert api.post(f"/api/v1/tokens/{bobs['id']}/revoke", user="alice").status_code == 404
    assert api.post("/api/v1/tokens/999999/revoke", user="alice").status_code == 404
    assert api.get("/api/v1/me", user="bob").status_code == 200
    # Issuing is for admins only, even for oneself.
    refused = api.post("/api/v1/tokens", user="erin", json={"user": "erin"})
    assert refused.status_code == 403
    # One's own token may be revoked (signing out everywhere).
    own = mine[0]["id"]
    assert api.post(f"/api/v1/tokens/{own}/revoke", user="alice").status_code == 200
    assert api.get("/api/v1/me", user="alice").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"user": "x" * 10_000},
        {"user": "🚀" * 30},
        {"user": "alice", "expires_in_seconds": -5},
        {"user": "alice", "expires_in_seconds": "soon"},
        {"user": "alice", "label": "l" * 65},
        {"user": 7},
        {},
    ],
)
def test_hostile_issue_requests_are_4xx(api: Api, body: dict[str, object]) -> None:
    answer = api.post("/api/v1/tokens", user="admin", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert "error" in answer.json()


@pytest.mark.parametrize("path", ["/api/v1/tokens/abc/revoke", "/api/v1/tokens/0/revoke"])
def test_bad_token_ids_are_4xx(api: Api, path: str) -> None:
    assert 400 <= api.post(path, user="admin").status_code < 500


def test_unauthenticated_and_garbage_tokens_are_401(api: Api) -> None:
    assert api.get("/api/v1/tokens", user=None).status_code == 401
    for garbage in ("sd_" + "a" * 10_000, "🚀🚀".encode(), "sd_nope", "' OR 1=1 --"):
        value = b"Bearer " + garbage if isinstance(garbage, bytes) else f"Bearer {garbage}".encode()
        headers = {b"Authorization": value}
        assert api.client.get("/api/v1/tokens", headers=headers).status_code == 401


def test_parse_expiry() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_expiry("30d", now) == now + timedelta(days=30)
    assert parse_expiry("12h", now) == now + timedelta(hours=12)
    assert parse_expiry("2027-01-31", now) == datetime(2027, 1, 31, tzinfo=UTC)
    for bad in ("0d", "yesterday", "2020-01-01", "-3d", "9" * 100):
        with pytest.raises(InvalidInput):
            parse_expiry(bad, now)


@dataclass
class Cli:
    """The real `shipdeck` commands, in process (a subprocess each costs seconds here)."""

    db: str
    runner: CliRunner

    def __call__(self, *args: str) -> Result:
        return self.runner.invoke(app, list(args))


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("SHIPDECK_DATABASE_URL", db)
    get_settings.cache_clear()
    yield Cli(db, CliRunner())
    get_settings.cache_clear()


def test_cli_tokens_create_list_revoke(cli: Cli, tmp_path: Path) -> None:
    db = cli.db
    world = tmp_path / "world.yaml"
    world.write_text(WORLD)
    assert cli("load", str(world)).exit_code == 0
    assert cli("users", "add", "zoe", "--role", "requester", "--project", "shop").exit_code == 0
    created = cli("tokens", "create", "zoe", "--label", "deploy-bot", "--expires", "7d")
    assert created.exit_code == 0, created.output
    secret = created.output.strip().splitlines()[-1]
    assert secret.startswith("sd_")
    token_id = created.output.split()[1]
    listed = cli("tokens", "list", "--user", "zoe")
    assert listed.exit_code == 0 and "deploy-bot" in listed.output and secret not in listed.output
    assert "never" in listed.output  # the `users add` token does not expire
    revoked = cli("tokens", "revoke", token_id)
    assert revoked.exit_code == 0 and "revoked" in revoked.output
    assert "deploy-bot" not in cli("tokens", "list", "--user", "zoe").output
    assert "revoked" in cli("tokens", "list", "--all").output
    assert cli("tokens", "revoke", "424242").exit_code == 1
    assert cli("tokens", "create", "nobody").exit_code == 1
    assert cli("tokens", "create", "zoe", "--expires", "yesterday").exit_code == 1
    # Issue and revocation are in the audit stream, and the chain still verifies.
    import sqlite3

    connection = sqlite3.connect(db.removeprefix("sqlite:///"))
    actions = [r[0] for r in connection.execute("SELECT action FROM audit_events ORDER BY seq")]
    connection.close()
    assert actions.count("token_issued") == 2 and actions.count("token_revoked") == 1
    assert cli("audit", "verify").exit_code == 0

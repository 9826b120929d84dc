"""GET /api/v1/audit/access: the access log for admins, filtered and paged."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from core.audit.models import AccessRecord
from core.config import Settings
from tests.api.conftest import Api
from tests.conftest import World


def test_admins_read_the_access_log_others_get_403(api: Api) -> None:
    assert api.get("/api/v1/releases", user="bob", params={"project": "shop"}).status_code == 200
    assert api.get("/api/v1/targets", user="bob").status_code == 200
    assert api.world.services.access.flush()
    page = api.get("/api/v1/audit/access", user="admin", params={"actor": "bob", "limit": 1})
    assert page.status_code == 200, page.text
    first = page.json()
    assert [(r["actor"], r["channel"]) for r in first["items"]] == [("bob", "rest")]
    assert first["next_before"] is not None
    rest = api.get(
        "/api/v1/audit/access",
        user="admin",
        params={"actor": "bob", "before": first["next_before"], "tool": "list_releases"},
    ).json()
    assert [(r["tool"], r["project"]) for r in rest["items"]] == [("list_releases", "shop")]
    assert rest["next_before"] is None
    since = api.get(
        "/api/v1/audit/access", user="admin", params={"since": "2999-01-01", "project": "shop"}
    )
    assert since.status_code == 200 and since.json()["items"] == []
    for user in ("alice", "bob"):
        assert api.get("/api/v1/audit/access", user=user).status_code == 403
    assert api.get("/api/v1/audit/access", user=None).status_code == 401


def test_hostile_filters_are_refused_or_find_nothing(api: Api) -> None:
    long = api.get("/api/v1/audit/access", user="admin", params={"actor": "x" * 10_000})
    assert long.status_code == 422
    for params in ({"actor": "🚀🔥"}, {"tool": "' OR 1=1 --"}, {"project": "ĉ" * 64}):
        found = api.get("/api/v1/audit/access", user="admin", params=params)
        assert found.status_code == 200 and found.json()["items"] == []
    for params in ({"limit": "0"}, {"before": "-1"}, {"since": "yesterday"}, {"extra": "1"}):
        assert api.get("/api/v1/audit/access", user="admin", params=params).status_code == 422


def test_shutting_the_app_down_writes_the_queued_reads(world: World) -> None:
    settings = Settings(database_url=str(world.services.engine.url), migrate_on_start=False)
    auth = {"Authorization": f"Bearer {world.tokens['victor']}"}
    with TestClient(create_app(settings, world.services)) as client:
        assert client.get("/api/v1/releases", headers=auth).status_code == 200
    # no flush() here: the app's shutdown wrote the queue
    with world.services.reads() as session:
        tools = session.scalars(select(AccessRecord.tool).where(AccessRecord.actor == "victor"))
        assert list(tools) == ["list_releases"]

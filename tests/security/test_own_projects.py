"""A call naming one of the caller's projects finds its id among the grants read with the
caller's token, without a statement of its own. The grants are read again for every request,
so a removed grant hides the project at the very next one, exactly as a nonexistent project
reads; a project the caller holds no grant on is still looked up, and still hidden."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.deps import resolve_token
from tests.conftest import World

STATUS = "/api/v1/tools/target_status"
SHOP_PROD = {"project": "shop", "environment": "prod"}
HIDDEN = {"code": "not_found", "message": "no project named 'shop'"}


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    from api.app import create_app
    from core.config import Settings

    settings = Settings(database_url=str(world.services.engine.url), migrate_on_start=False)
    with TestClient(create_app(settings, world.services)) as test_client:
        yield test_client


def _status(client: TestClient, world: World, user: str, **args: str) -> tuple[int, Any]:
    response = client.post(
        STATUS, json=args, headers={"Authorization": f"Bearer {world.tokens[user]}"}
    )
    return response.status_code, response.json()


def test_a_removed_grant_hides_the_project_at_the_next_request(
    world: World, client: TestClient
) -> None:
    with world.services.engine.connect() as connection:
        shop = connection.execute(text("SELECT id FROM projects WHERE name = 'shop'")).scalar_one()
    victor = resolve_token(world.services, world.tokens["victor"]).actor  # a viewer of shop
    assert dict(victor.projects) == {"shop": shop}
    status, body = _status(client, world, "victor", **SHOP_PROD)
    assert status == 200 and body["project"] == "shop", body
    with world.services.engine.begin() as connection:  # as an operator's SQL would
        connection.execute(text("DELETE FROM grants WHERE project_id = :p"), {"p": shop})
    status, body = _status(client, world, "victor", **SHOP_PROD)
    assert status == 404, body
    assert {k: body["error"][k] for k in HIDDEN} == HIDDEN
    assert body["error"]["details"] == {"project": "shop", "known": []}


def test_only_granted_projects_are_named_and_others_are_still_hidden(
    world: World, client: TestClient
) -> None:
    """An admin's global grant names no project (looked up); an outsider's names not shop."""
    assert dict(resolve_token(world.services, world.tokens["admin"]).actor.projects) == {}
    frank = resolve_token(world.services, world.tokens["frank"]).actor  # payment only
    assert set(frank.projects) == {"payment"}
    status, body = _status(client, world, "frank", **SHOP_PROD)
    assert status == 404 and {k: body["error"][k] for k in HIDDEN} == HIDDEN, body
    assert body["error"]["details"] == {"project": "shop", "known": ["payment"]}
    status, body = _status(client, world, "admin", **SHOP_PROD)
    assert status == 200 and body["project"] == "shop", body
    # names are matched without case, on the fast path as on the looked-up one
    status, body = _status(client, world, "victor", project="SHOP", environment="prod")
    assert status == 200 and body["project"] == "shop", body
    status, body = _status(client, world, "frank", project="SHOP", environment="prod")
    assert status == 404 and body["error"]["details"]["known"] == ["payment"], body
    # hostile and huge names never reach a lookup
    for name in ("shop🚀", "x" * 10_000, "shop'; DROP TABLE projects; --"):
        status, body = _status(client, world, "victor", project=name, environment="prod")
        assert status == 422, body

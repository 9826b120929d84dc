"""Ids and cursors past the 32-bit columns they name are refused as input on every door that
takes one, on both databases: PostgreSQL refuses to compare an INTEGER column with a larger
value ("integer out of range") and the request answered 500 where SQLite found nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.conftest import World

TOO_BIG = 2**31  # one past the largest INTEGER
LARGEST = 2**31 - 1
# release ids have at most 9 digits (tools.inputs.RELEASE_ID): every one of them fits
LARGEST_RELEASE, TOO_BIG_RELEASE = 999_999_999, 1_000_000_000

# (method, path with {n}, largest, one past it): every id or cursor a caller may send in a URL
REQUESTS = [
    ("GET", "/api/v1/approvals?before={n}", LARGEST, TOO_BIG),
    ("GET", "/api/v1/audit?before={n}", LARGEST, TOO_BIG),
    ("GET", "/api/v1/audit/access?before={n}", LARGEST, TOO_BIG),
    ("GET", "/api/v1/integrations/deliveries?before={n}", LARGEST, TOO_BIG),
    ("GET", "/api/v1/releases/R-{n}", LARGEST_RELEASE, TOO_BIG_RELEASE),
    ("GET", "/api/v1/releases/R-{n}/timeline", LARGEST_RELEASE, TOO_BIG_RELEASE),
    ("GET", "/api/v1/releases?before=R-{n}", LARGEST_RELEASE, TOO_BIG_RELEASE),
    ("POST", "/api/v1/tokens/{n}/revoke", LARGEST, TOO_BIG),
    ("POST", "/api/v1/freezes/{n}/lift", LARGEST, TOO_BIG),
]
# the tool door: the same inputs as JSON
TOOLS = [
    ("list_approvals", "before"),
    ("list_audit", "before"),
    ("get_release", "release_id"),
    ("lift_freeze", "freeze_id"),
]


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    from api.app import create_app
    from core.config import Settings

    settings = Settings(database_url=str(world.services.engine.url), migrate_on_start=False)
    with TestClient(create_app(settings, world.services), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(("method", "path", "largest", "too_big"), REQUESTS)
def test_an_id_past_the_column_is_refused_and_the_largest_is_looked_up(
    world: World, client: TestClient, method: str, path: str, largest: int, too_big: int
) -> None:
    headers = {"Authorization": f"Bearer {world.tokens['admin']}"}
    answer = client.request(method, path.format(n=largest), headers=headers)
    assert answer.status_code in (200, 404), (path, answer.status_code, answer.text)
    answer = client.request(method, path.format(n=too_big), headers=headers)
    assert answer.status_code == 422, (path, answer.status_code, answer.text)


@pytest.mark.parametrize(("tool", "field"), TOOLS)
def test_the_tool_door_refuses_the_same_ids(
    world: World, client: TestClient, tool: str, field: str
) -> None:
    headers = {"Authorization": f"Bearer {world.tokens['admin']}"}
    for value in (TOO_BIG, 10**15, f"R-{TOO_BIG_RELEASE}" if field == "release_id" else 2**62):
        answer = client.post(f"/api/v1/tools/{tool}", json={field: value}, headers=headers)
        assert answer.status_code == 422, (tool, value, answer.status_code, answer.text)


@pytest.mark.parametrize("text", ["202407011230", f"R-{TOO_BIG}", "R-999999999999", str(LARGEST)])
def test_a_long_number_in_a_search_is_only_text(
    world: World, client: TestClient, text: str
) -> None:
    """A 12-digit image tag is a fine thing to search for: found as text, never as an id past
    the column (it answered 500 on PostgreSQL)."""
    headers = {"Authorization": f"Bearer {world.tokens['admin']}"}
    answer = client.get("/api/v1/releases", params={"text": text}, headers=headers)
    assert answer.status_code == 200, (text, answer.status_code, answer.text)

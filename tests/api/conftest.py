"""A TestClient over the app wired to the test world's services."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.config import Settings
from tests.conftest import World


class Api:
    """A TestClient that signs requests as a named user of the world."""

    def __init__(self, client: TestClient, world: World) -> None:
        self.client = client
        self.world = world

    def headers(self, user: str | None, **extra: str) -> dict[str, str]:
        auth = {"Authorization": f"Bearer {self.world.tokens[user]}"} if user else {}
        return {**auth, **extra}

    def get(self, path: str, user: str | None = "alice", **kwargs):
        return self.client.get(
            path, headers=self.headers(user, **kwargs.pop("headers", {})), **kwargs
        )

    def post(self, path: str, user: str | None = "alice", **kwargs):
        return self.client.post(
            path, headers=self.headers(user, **kwargs.pop("headers", {})), **kwargs
        )


@pytest.fixture
def api(world: World) -> Iterator[Api]:
    settings = Settings(database_url=str(world.services.engine.url), migrate_on_start=False)
    with TestClient(create_app(settings, world.services)) as client:
        yield Api(client, world)

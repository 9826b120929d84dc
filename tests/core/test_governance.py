"""A randomized governance run on SQLite and PostgreSQL: no promise breaks, whatever is called."""

from __future__ import annotations

import os

from fastapi.testclient import TestClient

from api.app import create_app
from core.config import Settings
from tests.conftest import World
from tests.support import governance

STEPS = int(os.environ.get("SHIPDECK_GOVERNANCE_STEPS", "2000"))


def test_random_users_doors_and_actions_break_no_promise(world: World) -> None:
    services = world.services
    settings = Settings(database_url=str(services.engine.url), migrate_on_start=False)
    with TestClient(create_app(settings, services)) as client:
        report = governance.run(services, client, world.tokens, steps=STEPS, seed=20261126)
    assert report.violations == []
    assert report.steps == STEPS
    assert report.calls["chat"] > STEPS // 10  # the chat door took its share
    # the run exercised the flows, not only refusals
    assert report.calls["apply_release"] - report.refused["apply_release"] > 3
    assert report.calls["approve_release"] - report.refused["approve_release"] > 3

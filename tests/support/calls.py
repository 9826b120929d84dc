"""Call tools as a named user of the test world."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from tests.conftest import World
from tools.registry import get_tool


def call(world: World, user: str, tool: str, **args: Any) -> Any:
    """Run a tool as `user` and return its output model."""
    return get_tool(tool).run(world.services.context(world.actor(user)), args)


def deploy(world: World, user: str, project: str, env: str, **changes: dict[str, Any]) -> Any:
    """Preview a release as `user`."""
    return call(world, user, "preview_release", project=project, environment=env, changes=changes)


def sql(world: World, statement: str, **params: Any) -> Any:
    """Run raw SQL (to set up what only time or an outside hand would change)."""
    with world.services.engine.begin() as connection:
        return connection.execute(text(statement), params)


def approved_dev(world: World, tag: str = "1.7.0") -> str:
    """A shop/dev release of web at `tag`, submitted (dev needs no approval): approved."""
    release = deploy(world, "alice", "shop", "dev", web={"image_tag": tag})
    call(world, "alice", "submit_release", release_id=release.id)
    return str(release.id)


def wait_for_state(world: World, release_id: str, states: set[str], timeout: float = 30) -> str:
    """Poll the release until it reaches one of `states` (a background apply); return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = call(world, "admin", "get_release", release_id=release_id).lifecycle_state
        if state in states:
            return str(state)
        time.sleep(0.05)
    raise AssertionError(f"{release_id} never reached {states}")

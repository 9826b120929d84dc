"""Call tools as a named user of the test world."""

from __future__ import annotations

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

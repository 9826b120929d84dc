"""A chat turn costs the same number of SQL statements however many projects the caller sees."""

from __future__ import annotations

from typing import Any

from agent.rules.planner import RulesPlanner
from agent.session import ChatDeps, ChatSession
from core.permissions import SYSTEM
from core.targets.service import load_declaration, parse_declaration
from tests.conftest import World
from tests.core.test_query_counts import counted


def _projects(world: World, first: int, count: int) -> None:
    declaration = "projects:\n" + "".join(
        f"  - name: extra{i}\n    services: [web, api, 'worker-{i}']\n    targets:\n"
        f"      - {{environment: dev, runtime: sandbox}}\n"
        f"      - {{environment: prod, runtime: sandbox}}\n"
        for i in range(first, first + count)
    )
    with world.services.sessions() as session:
        load_declaration(session, actor=SYSTEM, declaration=parse_declaration(declaration))
        session.commit()


def test_chat_turn_statements_do_not_grow_with_the_callers_projects(world: World) -> None:
    frames: list[dict[str, Any]] = []
    deps = ChatDeps(world.services.sessions, world.services.context, RulesPlanner())
    chat = ChatSession.open(deps, world.actor("admin"), frames.append)
    _projects(world, 0, 2)
    with counted(world) as few:
        chat.handle({"type": "user_message", "text": "list releases"})
    _projects(world, 2, 20)
    frames.clear()
    with counted(world) as many:
        chat.handle({"type": "user_message", "text": "list releases"})
    assert frames[-1]["type"] == "assistant_message", frames
    assert len(many) == len(few), many
    catalog, _ = chat._plan_inputs()
    assert len(catalog.services) == 24
    assert catalog.services["extra7"] == ["api", "web", "worker-7"]
    assert catalog.environments["extra7"] == ["dev", "prod"]
    assert catalog.environments["shop"] == ["dev", "staging", "prod"]

"""The OpenAPI document tells the truth: schemathesis with every check, in process over ASGI.

The same engine as `st run --checks all` (examples, coverage, fuzzing and stateful phases),
bounded to a few examples per operation so it stays well under a minute. It runs as an admin
(most valid bodies succeed); schemathesis also replays calls without the token (ignored_auth).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from api.app import create_app
from core.config import Settings
from tests.conftest import World

MAX_EXAMPLES = 5


@pytest.fixture
def db_url(memory_sqlite_url: str) -> str:
    """SQLite only (the document is the same on every database), memory-backed."""
    return memory_sqlite_url


def failures(stream: Any) -> tuple[list[str], int, int]:
    """Every failed check and engine error of a run; how many cases and checks ran."""
    found: list[str] = []
    ran = 0
    cases: set[str] = set()
    for event in stream:
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            cases |= set(event.recorder.cases)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    ran += 1
                    if check.status == Status.FAILURE:
                        case = event.recorder.cases[case_id].value
                        info = check.failure_info
                        title = info.failure.title if info is not None else ""
                        found.append(
                            f"{case.method} {case.formatted_path}: {check.name}: {title}"
                            f"{_answer(event.recorder, case_id)}"
                        )
        elif isinstance(event, events.NonFatalError):
            found.append(f"{event.label}: error: {event.value!r}")
        elif isinstance(event, events.FatalError):
            found.append(f"fatal: {event.exception!r}")
    return sorted(set(found)), len(cases), ran


def _answer(recorder: Any, case_id: str) -> str:
    interaction = recorder.interactions.get(case_id)
    if interaction is None or interaction.response is None:
        return ""
    body = interaction.response.content or b""
    return f" -> {interaction.response.status_code} {body[:200]!r}"


def test_api_conforms_to_its_openapi(world: World) -> None:
    app = create_app(
        Settings(database_url=str(world.services.engine.url), migrate_on_start=False),
        world.services,
    )
    config = SchemathesisConfig()
    project = config.projects.override
    project.update(headers={"Authorization": f"Bearer {world.tokens['admin']}"})
    project.checks.update(included_check_names=["all"])
    project.generation.update(max_examples=MAX_EXAMPLES, deterministic=True, database="none")
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    found, cases, checks = failures(from_schema(schema).execute())
    assert found == [], "\n".join(found)
    assert cases > 1500 and checks > 20_000  # the run really covered the document


def test_the_schema_names_exactly_cores_states() -> None:
    """The lifecycle states the API documents for filtering are core's, no more, no fewer."""
    from typing import get_args

    from core.releases.lifecycle import State
    from tools.releases import LifecycleStateName

    assert set(get_args(LifecycleStateName)) == {s.value for s in State}

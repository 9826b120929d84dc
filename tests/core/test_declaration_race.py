"""Two declaration loads of the same file AT ONCE end as two loads in a row would.

Both finish, the database holds one copy of each row, each change is audited once (by the
load that made it; the other reports nothing for that part), the chain verifies, and a third
load changes nothing. The race is made, not hoped for (tests/support/races.py): both loads
read before either writes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from functools import partial

import pytest
from sqlalchemy import func, select, text

from api.wiring import Services
from core.audit.models import AuditEvent
from core.audit.service import canonical_json, verify
from core.errors import Conflict
from core.notify.declaration import load_notifications, split_declaration
from core.notify.models import NotifyRoute
from core.permissions import SYSTEM
from core.targets.models import PolicyRule, Project, Target
from core.targets.service import load_declaration, parse_declaration
from tests.support.races import race

NEW_PEOPLE = """
groups:
  racers: [rita, ray]
projects:
  - name: race1
    services: [web]
    owners: [olga, rita]
    requesters: [rick]
    targets:
      - {environment: prod, runtime: sandbox}
"""

NEW_PROJECTS = """
projects:
  - name: race1
    services: [web, api]
    targets:
      - {environment: dev, runtime: sandbox}
      - {environment: prod, runtime: sandbox}
    policies:
      - environment: prod
        steps: [{group: owners, count: 1}]
  - name: race2
    services: [gateway]
    targets:
      - {environment: prod, runtime: sandbox}
"""

BARE = """
projects:
  - name: race1
    services: [web]
    targets:
      - {environment: prod, runtime: sandbox}
"""

NEW_POLICIES = """
projects:
  - name: race1
    services: [web]
    targets:
      - {environment: prod, runtime: sandbox}
    policies:
      - environment: prod
        steps: [{group: owners, count: 1}]
      - environment: prod
        emergency: true
        steps: [{group: owners, count: 1}]
"""

CHANGED_TARGET = """
projects:
  - name: race1
    services: [web]
    targets:
      - {environment: prod, runtime: sandbox, preview_ttl_minutes: 30}
"""

NEW_ROUTES = """
notifications:
  - {name: race-hook, kind: webhook, url: "https://hooks.example/🚀?q=发布", events: [approved]}
identities:
  slack: {U0RACE: rita}
"""

# (what was loaded before, the file both loads declare, the table whose first write they race to)
CASES = {
    "new people": (None, NEW_PEOPLE, "users"),
    "new projects": (None, NEW_PROJECTS, "projects"),
    "new policies": (BARE, NEW_POLICIES, "policy_rules"),
    "changed target": (BARE, CHANGED_TARGET, "targets"),
    "new routes": (None, NEW_ROUTES, "notify_routes"),
}


def _load(services: Services, text: str) -> list[str]:
    """Load a declaration file's text as `shipdeck load` does: the catalog, then the routes."""
    rest, notify = split_declaration(text)
    with services.sessions() as session:
        result = load_declaration(session, actor=SYSTEM, declaration=parse_declaration(rest))
        changed = list(result["changed"])
        if notify is not None:
            changed += load_notifications(session, actor=SYSTEM, declaration=notify)
    return changed


def _last_seq(services: Services) -> int:
    with services.sessions() as session:
        return int(session.scalar(select(func.coalesce(func.max(AuditEvent.seq), 0))) or 0)


@pytest.mark.parametrize("case", list(CASES))
def test_two_loads_at_once_end_as_two_loads_in_a_row(services: Services, case: str) -> None:
    before, declaration, table = CASES[case]
    if before is not None:
        _load(services, before)
    since = _last_seq(services)

    results = race(services, table, *[partial(_load, services, declaration)] * 2)

    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    assert errors == [], errors  # never a raw IntegrityError, whichever load lost
    first, second = results
    # Every change was made (and reported) by exactly one of the two loads.
    assert first or second
    assert not (Counter(first) & Counter(second)), (first, second)
    assert len(set(first + second)) == len(first + second)
    with services.sessions() as session:
        events = session.execute(
            select(AuditEvent.action, AuditEvent.project, AuditEvent.data).where(
                AuditEvent.seq > since
            )
        ).all()
        audited = Counter((a, p, canonical_json(d)) for a, p, d in events)
        assert [e for e, n in audited.items() if n > 1] == []
        loaded = [p for a, p, _ in events if a == "declaration_loaded"]
        assert len(loaded) == len(set(loaded)), loaded
        projects = parse_declaration(split_declaration(declaration)[0]).projects
        assert session.scalar(select(func.count()).select_from(Project)) == len(projects)
        rules = session.scalar(select(func.count()).select_from(PolicyRule))
        assert rules == sum(len(p.policies) for p in projects)
        routes = session.scalars(select(NotifyRoute.name)).all()
        assert routes == (["race-hook"] if case == "new routes" else [])
        ttl = session.scalars(select(Target.preview_ttl_seconds)).all()
        assert (1800 in ttl) == (case == "changed target")
        assert verify(session).ok
    assert _load(services, declaration) == []  # a third load, in a row: nothing left to do


@pytest.fixture
def refusing_race2(pg_services: Services) -> Iterator[Services]:
    """PostgreSQL answers every INSERT of project `race2` with a unique violation, as if
    another writer won the race for it each time."""
    with pg_services.engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION lose_race2() RETURNS trigger AS $$ BEGIN "
                "IF NEW.name = 'race2' THEN RAISE unique_violation USING MESSAGE = "
                "'duplicate key value violates unique constraint (made by the test)'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        connection.execute(
            text(
                "CREATE TRIGGER lose_race2 BEFORE INSERT ON projects "
                "FOR EACH ROW EXECUTE FUNCTION lose_race2()"
            )
        )
    try:
        yield pg_services
    finally:
        with pg_services.engine.begin() as connection:
            connection.execute(text("DROP TRIGGER IF EXISTS lose_race2 ON projects"))
            connection.execute(text("DROP FUNCTION IF EXISTS lose_race2()"))


@pytest.mark.postgres
def test_a_part_that_keeps_losing_ends_in_a_conflict_saying_load_again(
    refusing_race2: Services, caplog: pytest.LogCaptureFixture
) -> None:
    services = refusing_race2
    with caplog.at_level(logging.WARNING), pytest.raises(Conflict) as raised:
        _load(services, NEW_PROJECTS)
    assert "loading project race2" in raised.value.message
    assert "load the file again" in raised.value.message
    assert raised.value.details["sqlstate"] == "23505"
    retried = [r for r in caplog.records if r.name == "shipdeck.retry"]
    gave_up = [r for r in caplog.records if r.name == "shipdeck.load"]
    assert len(retried) == 3 and len(gave_up) == 1, caplog.text
    assert "gave up after 4 tries" in gave_up[0].getMessage()
    with services.sessions() as session:
        # the part before it is loaded and audited; the losing part left nothing
        assert session.scalars(select(Project.name)).all() == ["race1"]
        assert verify(session).ok

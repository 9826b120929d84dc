"""The other writers of people race a load, or each other, and still end cleanly.

`users add` and a load granting the same person on the same project, and two first sign-ins
of one person through the provider (two tabs), both read "absent" before either writes
(tests/support/races.py). On PostgreSQL one of them used to fail with a raw unique violation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select, text

from api.wiring import Services
from core.audit.models import AuditEvent
from core.audit.service import verify
from core.identity.external import ExternalIdentity, sign_in_external
from core.identity.models import Grant, User
from core.identity.service import add_user, ensure_user
from core.permissions import SYSTEM, Role
from core.targets import grants
from tests.core.test_declaration_race import BARE, _load
from tests.support.pg_locks import lock_waiters
from tests.support.races import one_loses, race, until

OWNED = """
projects:
  - name: race1
    services: [web]
    owners: [olga]
    targets:
      - {environment: prod, runtime: sandbox}
"""


def _add_olga(services: Services) -> str:
    with services.sessions() as session:
        return add_user(session, actor=SYSTEM, name="olga", role=Role.approver, project="race1")


def test_users_add_and_a_load_granting_the_same_person_at_once(services: Services) -> None:
    _load(services, BARE)
    with services.sessions() as session:
        ensure_user(session, "olga")
        session.commit()

    # `users add` reads "no grant", then the load grants first: the one that used to fail.
    results = one_loses(
        services, "grants", lambda: _add_olga(services), lambda: _load(services, OWNED)
    )

    assert [repr(r) for r in results if isinstance(r, BaseException)] == []
    token, changed = results
    assert "group race1/owners: +olga" in changed and token
    with services.sessions() as session:
        roles = session.execute(select(Grant.project_id, Grant.role)).all()
        assert [role for _, role in roles] == ["approver"]  # one grant, not two
        assert grants.members(session, "owners", roles[0][0]) == ["olga"]
        assert grants.members(session, "approvers", roles[0][0]) == ["olga"]
        assert verify(session).ok
    assert _load(services, OWNED) == []


def _sign_in(services: Services, identity: ExternalIdentity) -> int:
    with services.sessions() as session:
        user = sign_in_external(session, identity)
        session.commit()
        return user.id


def test_two_first_sign_ins_of_one_person_at_once_make_one_user(services: Services) -> None:
    rita = ExternalIdentity(
        issuer="https://idp.example", subject="🚀" * 300, username="rita@example.com", groups=[]
    )

    results = race(
        services, "users", lambda: _sign_in(services, rita), lambda: _sign_in(services, rita)
    )

    assert [repr(r) for r in results if isinstance(r, BaseException)] == []
    assert results[0] == results[1]
    with services.sessions() as session:
        assert session.scalars(select(User.name)).all() == ["rita@example.com"]
        signed_in = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "signed_in")
        )
        assert signed_in == 2  # each sign-in is on record
        assert verify(session).ok


def test_other_peoples_sign_ins_go_on_while_one_is_in_flight(pg_services: Services) -> None:
    """A sign-in holds only its person's lock (and the declaration lock shared): another
    person's sign-in never waits for it, while a load part waits until it commits."""
    services = pg_services
    first_load = _load(services, BARE)
    assert first_load
    rita, sam = (
        ExternalIdentity(issuer="https://idp.example", subject=s, username=s, groups=[])
        for s in ("rita", "sam🚀")
    )
    results: dict[str, Any] = {}

    def run(name: str, work: Callable[[], Any]) -> threading.Thread:
        thread = threading.Thread(target=lambda: results.setdefault(name, work()), name=name)
        thread.start()
        return thread

    with services.sessions() as held, services.engine.connect() as watcher:
        sign_in_external(held, rita)  # in flight: not committed yet
        me = int(held.execute(text("SELECT pg_backend_pid()")).scalar_one())
        other = run("sam", lambda: _sign_in(services, sam))
        other.join(30)
        assert not other.is_alive(), "another person's sign-in waited for rita's"
        load = run("load", lambda: _load(services, OWNED))
        until(lambda: lock_waiters(watcher, me) == 1, "the load part never waited for rita's")
        assert "load" not in results
        held.commit()
    load.join(30)
    assert not load.is_alive()
    assert results["load"], results  # olga made an owner
    with services.sessions() as session:
        assert sorted(session.scalars(select(User.name))) == ["olga", "rita", "sam"]

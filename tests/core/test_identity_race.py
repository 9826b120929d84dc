"""The other writers of people race a load, or each other, and still end cleanly.

`users add` and a load granting the same person on the same project, and two first sign-ins
of one person through the provider (two tabs), both read "absent" before either writes
(tests/support/races.py). On PostgreSQL one of them used to fail with a raw unique violation.
"""

from __future__ import annotations

from sqlalchemy import func, select

from api.wiring import Services
from core.audit.models import AuditEvent
from core.audit.service import verify
from core.identity.external import ExternalIdentity, sign_in_external
from core.identity.models import Grant, User
from core.identity.service import add_user, ensure_user
from core.permissions import SYSTEM, Role
from core.targets import grants
from core.targets.service import load_declaration, parse_declaration
from tests.support.races import one_loses, race

BARE = """
projects:
  - name: race1
    services: [web]
    targets:
      - {environment: prod, runtime: sandbox}
"""

OWNED = """
projects:
  - name: race1
    services: [web]
    owners: [olga]
    targets:
      - {environment: prod, runtime: sandbox}
"""


def _load(services: Services, text: str) -> list[str]:
    with services.sessions() as session:
        result = load_declaration(session, actor=SYSTEM, declaration=parse_declaration(text))
    return list(result["changed"])


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

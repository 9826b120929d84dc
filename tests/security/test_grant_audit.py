"""Every grant a declaration makes is audited and reported; omission deletes nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from core.audit.models import AuditEvent
from core.targets.models import PolicyRule
from core.targets.service import load_declaration, parse_declaration
from tests.conftest import World
from tests.support.calls import call


def _load(world: World, text: str, *, prune: bool = False) -> list[str]:
    with world.services.sessions() as session:
        result = load_declaration(
            session, actor=world.actor("admin"), declaration=parse_declaration(text), prune=prune
        )
    return list(result["changed"])


def _events(world: World, after: int) -> list[AuditEvent]:
    with world.services.sessions() as session:
        return list(
            session.scalars(select(AuditEvent).where(AuditEvent.seq > after).order_by("seq"))
        )


def _last_seq(world: World) -> int:
    return int(call(world, "admin", "verify_audit").last_seq)


def _policies(world: World, project: str) -> list[Any]:
    from core.targets.models import Project

    with world.services.sessions() as session:
        pid = session.scalars(select(Project.id).where(Project.name == project)).one()
        return list(session.scalars(select(PolicyRule).where(PolicyRule.project_id == pid)))


def test_a_global_group_making_an_approver_is_reported_and_audited(world: World) -> None:
    before = _last_seq(world)
    changed = _load(world, "groups:\n  sre: [u7]\n")
    assert "role u7 on all projects: none -> approver" in changed
    assert "group sre: +u7" in changed
    events = {e.action: e for e in _events(world, before)}
    assert events["grant_changed"].data == {
        "user": "u7",
        "project": None,
        "before": None,
        "after": "approver",
    }
    assert events["group_changed"].data["after"] == ["carol", "dave", "u7"]
    assert events["grant_changed"].actor == "admin"
    assert call(world, "admin", "verify_audit").ok


def test_a_project_role_raise_has_before_and_after(world: World) -> None:
    before = _last_seq(world)
    changed = _load(
        world, "projects:\n  - name: shop\n    services: [web]\n    approvers: [victor]\n"
    )
    assert "role victor on shop: viewer -> approver" in changed
    grant = next(e for e in _events(world, before) if e.action == "grant_changed")
    assert (grant.project, grant.data["before"], grant.data["after"]) == (
        "shop",
        "viewer",
        "approver",
    )


def test_omitting_policies_deletes_nothing_unless_pruned(world: World) -> None:
    assert len(_policies(world, "payment")) == 2
    before = _last_seq(world)
    assert _load(world, "projects:\n  - name: payment\n    services: [gateway]\n") == []
    assert len(_policies(world, "payment")) == 2
    assert _events(world, before) == []  # nothing changed, nothing recorded
    changed = _load(world, "projects:\n  - name: payment\n    services: [gateway]\n", prune=True)
    assert "policies payment: 2 -> 0 rules" in changed
    assert _policies(world, "payment") == []
    event = next(e for e in _events(world, before) if e.action == "policies_changed")
    assert len(event.data["before"]) == 2 and event.data["after"] == []
    assert event.data["before"][0]["steps"][1] == {"group": "sre", "count": 1}


def test_prune_removes_unlisted_members_and_says_so(world: World) -> None:
    text = "projects:\n  - name: shop\n    services: [web]\n    owners: [bob]\n"
    assert not any("group" in line for line in _load(world, text))  # dave stays without prune
    before = _last_seq(world)
    changed = _load(world, text, prune=True)
    assert "group shop/owners: -dave" in changed
    event = next(e for e in _events(world, before) if e.action == "group_changed")
    assert (event.data["before"], event.data["after"]) == (["bob", "dave"], ["bob"])


def test_hostile_names_are_refused_before_anything_changes(world: World) -> None:
    import pytest

    from core.errors import InvalidInput

    before = _last_seq(world)
    with pytest.raises(InvalidInput):
        _load(world, "groups:\n  sre: ['" + "😀" * 10_000 + "']\n")
    assert _last_seq(world) == before

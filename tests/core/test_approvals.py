"""Approval policy, decisions, batch, takeover and the global inbox."""

from __future__ import annotations

import pytest

from core.errors import Conflict, IllegalTransition, PermissionDenied
from tests.conftest import World
from tests.support.calls import call, deploy


def _pending(world: World, project: str = "shop", tag: str = "1.5.0", user: str = "alice") -> str:
    service = "web" if project == "shop" else "gateway"
    release = deploy(world, user, project, "prod", **{service: {"image_tag": tag}})
    call(world, user, "submit_release", release_id=release.id)
    return str(release.id)


def test_requester_never_approves_their_own_release(world: World) -> None:
    release_id = _pending(world, user="bob")  # bob is an approver of shop, and the requester
    with pytest.raises(PermissionDenied, match="can never approve"):
        call(world, "bob", "approve_release", release_id=release_id)
    with pytest.raises(PermissionDenied, match="can never reject"):
        call(world, "bob", "reject_release", release_id=release_id)
    assert call(world, "bob", "get_release", release_id=release_id).lifecycle_state == (
        "pending_approval"
    )
    call(world, "erin", "approve_release", release_id=release_id)


def test_requester_role_cannot_approve_and_viewer_cannot_request(world: World) -> None:
    release_id = _pending(world)
    with pytest.raises(PermissionDenied, match="approver role"):
        call(world, "victor", "approve_release", release_id=release_id)
    with pytest.raises(PermissionDenied, match="requester role"):
        deploy(world, "victor", "shop", "dev", web={"image_tag": "2"})


def test_multi_step_policy_in_order_and_one_person_counts_once(world: World) -> None:
    release_id = _pending(world, "payment")
    ticket = call(world, "alice", "get_release", release_id=release_id).approval
    assert [(s.group, s.count) for s in ticket.steps] == [("owners", 1), ("sre", 1)]
    # carol is SRE but not an owner: she cannot decide step 1.
    with pytest.raises(PermissionDenied, match="step 1"):
        call(world, "carol", "approve_release", release_id=release_id)
    # dave is both an owner (of shop, not payment) and SRE: not eligible for payment's owners.
    with pytest.raises(PermissionDenied):
        call(world, "dave", "approve_release", release_id=release_id)
    after_one = call(world, "frank", "approve_release", release_id=release_id, comment="lgtm")
    assert after_one.lifecycle_state == "pending_approval"
    assert after_one.approval.current_step == 1
    assert after_one.approval.steps[0].approved_by == ["frank"]
    # frank is not SRE anyway, and may not count twice.
    with pytest.raises(Conflict, match="counts once"):
        call(world, "frank", "approve_release", release_id=release_id)
    done = call(world, "carol", "approve_release", release_id=release_id)
    assert done.lifecycle_state == "approved"
    assert done.approval.state == "approved"


def test_person_in_both_groups_counts_once(world: World) -> None:
    # shop prod with a two-step policy: owners then sre; dave is in both groups.
    from core.permissions import SYSTEM
    from core.targets.service import load_declaration, parse_declaration
    from tests.conftest import WORLD

    text = WORLD.replace(
        "    targets:\n      - {environment: dev, runtime: sandbox, images",
        "    policies:\n      - environment: prod\n"
        "        steps: [{group: owners, count: 1}, {group: sre, count: 1}]\n"
        "    targets:\n      - {environment: dev, runtime: sandbox, images",
        1,
    )
    with world.services.sessions() as session:
        load_declaration(session, actor=SYSTEM, declaration=parse_declaration(text))
    release_id = _pending(world)
    call(world, "dave", "approve_release", release_id=release_id)
    with pytest.raises(Conflict, match="counts once"):
        call(world, "dave", "approve_release", release_id=release_id)
    assert call(world, "alice", "get_release", release_id=release_id).lifecycle_state == (
        "pending_approval"
    )
    assert call(world, "carol", "approve_release", release_id=release_id).lifecycle_state == (
        "approved"
    )


def test_rejection_at_any_step_ends_the_ticket(world: World) -> None:
    release_id = _pending(world, "payment")
    call(world, "frank", "approve_release", release_id=release_id)
    rejected = call(world, "carol", "reject_release", release_id=release_id, reason="not today")
    assert rejected.lifecycle_state == "rejected"
    assert rejected.approval.state == "rejected"
    assert rejected.reason == "not today"
    with pytest.raises(IllegalTransition) as raised:
        call(world, "dave", "approve_release", release_id=release_id)
    assert raised.value.current == "rejected"


def test_batch_decisions_are_audited_one_by_one(world: World) -> None:
    ids = [_pending(world, tag=f"1.{i}.0") for i in range(2)]
    # Different services, so none supersedes the other.
    api = deploy(world, "alice", "shop", "prod", api={"image_tag": "2.1.0"})
    call(world, "alice", "submit_release", release_id=api.id)
    own = _pending(world, "payment", user="alice")
    result = call(world, "bob", "approve_releases", release_ids=[ids[1], api.id, own, "R-999"])
    outcome = {item.release_id: (item.ok, item.lifecycle_state) for item in result.items}
    assert outcome[ids[1]] == (True, "approved")
    assert outcome[api.id] == (True, "approved")
    assert outcome[own][0] is False  # bob is not an owner of payment
    assert outcome["R-999"][0] is False
    audit = call(world, "admin", "list_audit", limit=500).items
    approvals = [e for e in audit if e.action == "approve" and e.actor == "bob"]
    assert sorted(e.release_id for e in approvals) == sorted([ids[1], api.id])
    rejected = call(world, "erin", "reject_releases", release_ids=[own], reason="no")
    assert rejected.items[0].ok is False  # erin approves shop, not payment


def test_takeover_by_another_eligible_approver(world: World) -> None:
    release_id = _pending(world)
    taken = call(world, "bob", "takeover_approval", release_id=release_id)
    assert taken.approval.assignee == "bob"
    again = call(world, "erin", "takeover_approval", release_id=release_id)
    assert again.approval.assignee == "erin"
    with pytest.raises(PermissionDenied):
        call(world, "alice", "takeover_approval", release_id=release_id)
    timeline = call(world, "alice", "release_timeline", release_id=release_id)
    takeovers = [e.data for e in timeline.entries if e.action == "takeover"]
    assert takeovers == [{"from": None, "to": "bob"}, {"from": "bob", "to": "erin"}]


def test_inbox_filters_mine_and_pagination(world: World) -> None:
    shop = [_pending(world, tag=f"1.{i}.0") for i in range(1)]
    api = deploy(world, "alice", "shop", "prod", api={"replicas": 0})
    call(world, "alice", "submit_release", release_id=api.id)
    pay = _pending(world, "payment")
    everything = call(world, "admin", "list_approvals")
    assert [i.release_id for i in everything.items] == [pay, api.id, *shop]
    assert [
        i.release_id for i in call(world, "admin", "list_approvals", project="payment").items
    ] == [pay]
    # prod is a high-risk target: every change there is high risk, whatever it touches
    assert [i.release_id for i in call(world, "admin", "list_approvals", risk="high").items] == [
        pay,
        api.id,
        *shop,
    ]
    assert call(world, "admin", "list_approvals", risk="low").items == []
    assert call(world, "admin", "list_approvals", environment="dev").items == []
    # bob can decide shop's tickets, not payment's.
    mine = call(world, "bob", "list_approvals", mine=True)
    assert [i.release_id for i in mine.items] == [api.id, *shop]
    assert all(i.can_decide for i in mine.items)
    # frank (payment owner) sees payment's. carol (SRE, a global approver) can decide shop's
    # default step, but payment's only once its owners step is done.
    assert [i.release_id for i in call(world, "frank", "list_approvals", mine=True).items] == [pay]
    carol = [i.release_id for i in call(world, "carol", "list_approvals", mine=True).items]
    assert carol == [api.id, *shop]
    call(world, "frank", "approve_release", release_id=pay)
    carol = [i.release_id for i in call(world, "carol", "list_approvals", mine=True).items]
    assert carol == [pay, api.id, *shop]
    # The requester's "mine" shows what they asked for.
    assert len(call(world, "alice", "list_approvals", mine=True).items) == 3
    # Once bob approved, it leaves his actionable list but stays in the inbox.
    call(world, "bob", "approve_release", release_id=api.id)
    assert [i.release_id for i in call(world, "bob", "list_approvals", mine=True).items] == shop
    approved = call(world, "admin", "list_approvals", state="approved")
    assert [i.release_id for i in approved.items] == [api.id]
    first = call(world, "admin", "list_approvals", limit=2)
    assert len(first.items) == 2 and first.next_before is not None
    second = call(world, "admin", "list_approvals", limit=2, before=first.next_before)
    assert [i.release_id for i in second.items] == shop and second.next_before is None


def test_project_scoped_viewer_sees_only_their_projects(world: World) -> None:
    _pending(world, "payment")
    assert call(world, "victor", "list_approvals").items == []
    assert {t.project for t in call(world, "victor", "list_targets").items} == {"shop"}


def test_moving_a_ticket_keeps_a_loaded_ticket_in_step(world: World) -> None:
    """`set_ticket_state` is one UPDATE; a ticket the session already holds says the new state
    at once (a statement built with the state as a bound parameter left it None)."""
    from core.approvals.tickets import current_ticket, set_ticket_state
    from core.ids import parse_release_id

    number = parse_release_id(_pending(world))
    with world.services.sessions() as session:
        loaded = current_ticket(session, number)
        assert loaded is not None and loaded.state == "pending"
        set_ticket_state(session, number, "cancelled", only_from=("pending", "approved"))
        assert loaded.state == "cancelled"
        set_ticket_state(session, number, "expired", only_from=("pending", "approved"))
        assert loaded.state == "cancelled"  # not a source state: nothing moved
        session.commit()
    with world.services.sessions() as session:
        stored = current_ticket(session, number)
        assert stored is not None and stored.state == "cancelled"

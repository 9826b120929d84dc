"""Change windows, ad-hoc freezes and the promotion order, checked in core at submit and apply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.db import utcnow
from core.errors import Frozen, InvalidInput, NotFound, PermissionDenied, PromotionRefused
from core.flows.freezes import freeze_changes, lift_freeze, list_freezes
from core.flows.promotion import promote_release
from core.flows.submit import submit_release
from core.permissions import SYSTEM
from core.targets.service import load_declaration, parse_declaration
from core.windows import open_window, parse_cron
from tests.conftest import WORLD, World
from tests.support.calls import call, deploy


def _freeze(world: World, user: str, environment: str | None = "prod", **kw: Any) -> Any:
    args: dict[str, Any] = {
        "project": "shop",
        "environment": environment,
        "until": utcnow() + timedelta(hours=2),
        "reason": "incident 42 🔥",
    }
    args.update(kw)
    with world.services.sessions() as session:
        return freeze_changes(session, actor=world.actor(user), **args)


def _declare(world: World, text: str) -> None:
    with world.services.sessions() as session:
        load_declaration(session, actor=SYSTEM, declaration=parse_declaration(text))


def test_a_freeze_refuses_submit_and_apply_with_who_and_why_until_lifted(world: World) -> None:
    approved = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.0"})
    call(world, "alice", "submit_release", release_id=approved.id)
    freeze = _freeze(world, "carol", environment=None)  # carol is SRE: every shop target
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    with pytest.raises(Frozen, match="frozen until .* by carol: incident 42"):
        call(world, "alice", "submit_release", release_id=release.id)
    with pytest.raises(Frozen):
        call(world, "alice", "apply_release", release_id=approved.id)
    shown = {
        t.environment: t.frozen for t in call(world, "victor", "list_targets", project="shop").items
    }
    assert all("by carol: incident 42 🔥" in reasons[0] for reasons in shown.values())
    assert call(world, "alice", "get_release", release_id=approved.id).lifecycle_state == "approved"
    with world.services.sessions() as session:
        listed = list_freezes(session, actor=world.actor("victor"), project="shop")
        assert [f.id for f in listed] == [freeze.id]
        assert list_freezes(session, actor=world.actor("frank")) == []  # not his project
        with pytest.raises(PermissionDenied):
            lift_freeze(session, actor=world.actor("alice"), freeze_id=freeze.id)
        with pytest.raises(NotFound):
            lift_freeze(session, actor=world.actor("carol"), freeze_id=99999)
        lifted = lift_freeze(session, actor=world.actor("admin"), freeze_id=freeze.id)
        assert (lifted.active, lifted.lifted_by) == (False, "admin")
    assert call(world, "alice", "submit_release", release_id=release.id).lifecycle_state == (
        "pending_approval"
    )
    audit = [e.action for e in call(world, "admin", "list_audit", limit=500).items]
    assert "freeze" in audit and "lift_freeze" in audit


@pytest.mark.parametrize(
    ("user", "kw", "error"),
    [
        ("alice", {}, PermissionDenied),  # a requester cannot freeze
        ("bob", {}, PermissionDenied),  # nor can an approver outside SRE
        ("carol", {"reason": "  "}, InvalidInput),
        ("carol", {"reason": "x" * 10_000}, InvalidInput),
        ("carol", {"until": datetime(2000, 1, 1, tzinfo=UTC)}, InvalidInput),
        ("carol", {"until": datetime(2030, 1, 1, tzinfo=UTC).replace(tzinfo=None)}, InvalidInput),
        ("carol", {"until": utcnow() + timedelta(days=400)}, InvalidInput),
        ("carol", {"project": "nope"}, NotFound),
        ("carol", {"environment": "qa"}, NotFound),
    ],
)
def test_hostile_freezes_are_refused(
    world: World, user: str, kw: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        _freeze(world, user, **kw)


def test_an_emergency_rollback_passes_a_freeze_and_the_pass_is_audited(world: World) -> None:
    release = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "7.0.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "frank", "approve_release", release_id=release.id)
    call(world, "carol", "approve_release", release_id=release.id)
    call(world, "alice", "apply_release", release_id=release.id)
    with world.services.sessions() as session:
        freeze_changes(
            session,
            actor=world.actor("admin"),
            project="payment",
            environment="prod",
            until=utcnow() + timedelta(hours=1),
            reason="incident 7",
        )
    plain = call(world, "alice", "rollback_release", project="payment", environment="prod")
    with pytest.raises(Frozen):
        call(world, "alice", "submit_release", release_id=plain.id)
    urgent = call(
        world, "carol", "rollback_release", project="payment", environment="prod", emergency=True
    )
    assert call(world, "carol", "submit_release", release_id=urgent.id).lifecycle_state == (
        "pending_approval"
    )
    timeline = call(world, "admin", "release_timeline", release_id=urgent.id).entries
    assert any(e.action == "freeze_passed" for e in timeline)


def test_declared_deny_and_allow_windows(world: World) -> None:
    now = utcnow()
    minute = now.astimezone(UTC).minute
    open_now = f"{minute} * * * *"
    closed = f"{(minute + 30) % 60} * * * *"
    text = WORLD.replace(
        "- {environment: staging, runtime: sandbox}",
        "- {environment: staging, runtime: sandbox, windows: [{kind: deny, cron: '"
        + open_now
        + "', duration_minutes: 10, timezone: Asia/Shanghai, reason: 周五封板}]}",
    ).replace(
        "- {environment: dev, runtime: sandbox,",
        "- {environment: dev, runtime: sandbox, windows: [{kind: allow, cron: '"
        + closed
        + "', duration_minutes: 5}],",
    )
    _declare(world, text)
    staging = deploy(world, "alice", "shop", "staging", web={"image_tag": "1.6.0"})
    with pytest.raises(Frozen, match="deny window .*周五封板"):
        call(world, "alice", "submit_release", release_id=staging.id)
    dev = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.0"})
    with pytest.raises(Frozen, match="outside its change windows"):
        call(world, "alice", "submit_release", release_id=dev.id)
    prod = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    assert call(world, "alice", "submit_release", release_id=prod.id).lifecycle_state == (
        "pending_approval"
    )


def test_cron_parsing_and_window_edges() -> None:
    assert parse_cron("*/15 9-17 * * 1-5")[0] == frozenset({0, 15, 30, 45})
    assert parse_cron("0 0 * * 7")[4] == frozenset({0})
    for bad in ("* * * *", "61 * * * *", "a b c d e", "*/0 * * * *", "5-1 * * * *", "🙂" * 5):
        with pytest.raises(ValueError):
            parse_cron(bad)
    # Friday 18:00 Berlin for 64 h: Saturday noon Berlin is inside, Monday 10:00 is not.
    window = {
        "kind": "deny",
        "cron": "0 18 * * 5",
        "duration_minutes": 64 * 60,
        "timezone": "Europe/Berlin",
    }
    inside = open_window(window, datetime(2026, 11, 28, 11, 0, tzinfo=UTC))
    assert inside is not None and inside.closes_at.hour == 10
    assert open_window(window, datetime(2026, 11, 30, 9, 1, tzinfo=UTC)) is None
    for bad_zone in ("Mars/Olympus", "../etc/passwd"):
        text = WORLD.replace(
            "- {environment: staging, runtime: sandbox}",
            "- {environment: staging, runtime: sandbox, windows: [{kind: deny, cron: '0 * * * *', "
            f"duration_minutes: 5, timezone: '{bad_zone}'}}]}}",
        )
        with pytest.raises(Exception, match="time zone"):
            parse_declaration(text)


def test_promotion_order_refuses_a_skipped_step_unless_an_admin_overrides(world: World) -> None:
    text = WORLD.replace(
        "    requesters: [alice]\n    viewers: [victor]\n",
        "    requesters: [alice]\n    viewers: [victor]\n    promotion: [dev, staging, prod]\n",
        1,
    )
    assert text != WORLD
    _declare(world, text)
    prod = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.6.0"})
    with pytest.raises(PromotionRefused, match="never applied on staging: web: shop/web:1.6.0"):
        call(world, "alice", "submit_release", release_id=prod.id)
    # Prove it on dev, then staging, and prod accepts it.
    for env in ("dev", "staging"):
        step = deploy(world, "alice", "shop", env, web={"image_tag": "1.6.0"})
        call(world, "alice", "submit_release", release_id=step.id)
        call(world, "alice", "apply_release", release_id=step.id)
    assert call(world, "alice", "submit_release", release_id=prod.id).lifecycle_state == (
        "pending_approval"
    )
    # An admin may override a skipped step, audited; a requester may not.
    other = deploy(world, "alice", "shop", "prod", api={"image_tag": "2.5.0"})
    with world.services.sessions() as session:
        with pytest.raises(PermissionDenied, match="only an admin"):
            submit_release(
                session,
                actor=world.actor("alice"),
                runner=world.services.runner,
                release=other.id,
                override_promotion=True,
            )
        session.rollback()
        submitted = submit_release(
            session,
            actor=world.actor("admin"),
            runner=world.services.runner,
            release=other.id,
            override_promotion=True,
        )
    assert submitted.lifecycle_state == "pending_approval"
    timeline = call(world, "admin", "release_timeline", release_id=other.id).entries
    assert [e.data["missing"] for e in timeline if e.action == "promotion_override"] == [
        ["api: shop/api:2.5.0"]
    ]
    call(world, "bob", "approve_release", release_id=other.id)
    assert call(world, "alice", "apply_release", release_id=other.id).lifecycle_state in (
        "applying",
        "applied",
    )
    with pytest.raises(Exception, match="promotion"):
        parse_declaration(text.replace("[dev, staging, prod]", "[dev, qa]"))


def test_promote_takes_the_images_proven_on_the_previous_environment(world: World) -> None:
    text = WORLD.replace(
        "    requesters: [alice]\n    viewers: [victor]\n",
        "    requesters: [alice]\n    viewers: [victor]\n    promotion: [dev, staging, prod]\n",
        1,
    )
    _declare(world, text)
    runtimes = world.services.runtimes
    with world.services.sessions() as session:
        with pytest.raises(InvalidInput, match="nothing was ever applied on shop/staging"):
            promote_release(
                session,
                actor=world.actor("alice"),
                runtimes=runtimes,
                project="shop",
                source="staging",
                destination="prod",
            )
        with pytest.raises(InvalidInput, match="does not come right after dev"):
            promote_release(
                session,
                actor=world.actor("alice"),
                runtimes=runtimes,
                project="shop",
                source="dev",
                destination="prod",
            )
    for env in ("dev", "staging"):
        step = deploy(world, "alice", "shop", env, web={"image_tag": "1.6.0"})
        call(world, "alice", "submit_release", release_id=step.id)
        call(world, "alice", "apply_release", release_id=step.id)
    broken = deploy(world, "alice", "shop", "staging", api={"image_tag": "2.9.0-broken"})
    with world.services.sessions() as session:  # an admin skips dev for it; the apply fails
        submit_release(
            session,
            actor=world.actor("admin"),
            runner=world.services.runner,
            release=broken.id,
            override_promotion=True,
        )
    call(world, "alice", "apply_release", release_id=broken.id)
    assert call(world, "alice", "get_release", release_id=broken.id).lifecycle_state == "failed"
    with world.services.sessions() as session:
        with pytest.raises(PermissionDenied):
            promote_release(
                session,
                actor=world.actor("victor"),
                runtimes=runtimes,
                project="shop",
                source="staging",
                destination="prod",
            )
        with pytest.raises(InvalidInput, match="never applied on shop/staging: api"):
            promote_release(
                session,
                actor=world.actor("alice"),
                runtimes=runtimes,
                project="shop",
                source="staging",
                destination="prod",
                services=["web", "api"],
            )
        promoted = promote_release(
            session,
            actor=world.actor("alice"),
            runtimes=runtimes,
            project="shop",
            source="staging",
            destination="prod",
        )
    assert promoted.environment == "prod"
    assert promoted.changes == {"web": {"image": "shop/web:1.6.0"}}
    assert call(world, "alice", "submit_release", release_id=promoted.id).lifecycle_state == (
        "pending_approval"
    )
    timeline = call(world, "alice", "release_timeline", release_id=promoted.id).entries
    assert [e.data["from"] for e in timeline if e.action == "promote"] == ["staging"]


def test_releases_inbox_and_cards_say_frozen_with_who_why_until_and_window(world: World) -> None:
    from agent.cards import release_view

    pending = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    call(world, "alice", "submit_release", release_id=pending.id)
    dev = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.0"})
    other = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "3.2.0"})
    assert call(world, "bob", "get_release", release_id=pending.id).frozen is None
    freeze = _freeze(world, "carol")  # shop/prod only
    got = call(world, "bob", "get_release", release_id=pending.id).frozen
    assert got is not None and (got.reason, got.declared_by, got.window) == (
        "incident 42 🔥",
        "carol",
        None,
    )
    assert got.until == freeze.until
    page = {r.id: r.frozen for r in call(world, "admin", "list_releases").items}
    assert page[pending.id] == got and page[dev.id] is None and page[other.id] is None
    inbox = call(world, "bob", "list_approvals", state="pending").items
    assert [(i.release_id, i.frozen) for i in inbox] == [(pending.id, got)]
    with world.services.sessions() as session:
        card = release_view(session, int(pending.id.removeprefix("R-")))
    assert card["frozen"] == got.model_dump(mode="json")
    # A deny window holds staging: named as the window, with no one who declared it.
    minute = utcnow().astimezone(UTC).minute
    _declare(
        world,
        WORLD.replace(
            "- {environment: staging, runtime: sandbox}",
            "- {environment: staging, runtime: sandbox, windows: [{kind: deny, cron: '"
            + f"{minute} * * * *"
            + "', duration_minutes: 10, timezone: Asia/Shanghai, reason: 周五封板}]}",
        ),
    )
    staging = deploy(world, "alice", "shop", "staging", web={"image_tag": "1.6.0"})
    held = call(world, "alice", "get_release", release_id=staging.id).frozen
    assert held is not None and held.reason == "周五封板" and held.declared_by is None
    assert held.window == f"deny {minute} * * * * (Asia/Shanghai)" and held.until is not None
    with world.services.sessions() as session:  # a card reads the window off its release's row
        card = release_view(session, int(staging.id.removeprefix("R-")))
    assert card["frozen"] == held.model_dump(mode="json")


def test_a_release_read_reports_the_freeze_a_fresh_check_finds(world: World) -> None:
    """A release, a releases page and the inbox read the freeze holding each target with the
    release (one statement); it must be the one `frozen_now` finds on its own, whatever
    freezes pile up: lifted, ended, on another environment or project, project-wide."""
    from core.flows.freezes import lift_freeze
    from core.targets.frozen import frozen_now
    from core.targets.models import Freeze, Target
    from core.text import first_line

    waiting = {}
    for project, environment, service in (
        ("shop", "dev", "web"),
        ("shop", "staging", "web"),
        ("shop", "prod", "web"),
        ("payment", "prod", "gateway"),
    ):
        made = deploy(world, "alice", project, environment, **{service: {"image_tag": "7.0"}})
        if environment == "prod":
            call(world, "alice", "submit_release", release_id=made.id)
        waiting[made.id] = (project, environment)
    now = utcnow()
    _freeze(world, "carol", "prod", reason="🔥" * 500, until=now + timedelta(hours=3))
    _freeze(world, "carol", "staging", reason="short", until=now + timedelta(hours=1))
    lifted = _freeze(world, "carol", "staging", reason="lifted", until=now + timedelta(hours=9))
    with world.services.sessions() as session:
        lift_freeze(session, actor=world.actor("carol"), freeze_id=lifted.id)
        shop = session.query(Target).filter_by(environment="dev").first()
        assert shop is not None
        # ended an hour ago and never lifted: still a row, no longer a freeze
        session.add(
            Freeze(
                project_id=shop.project_id,
                environment=None,
                reason="ended",
                until=now - timedelta(hours=1),
                created_by="carol",
            )
        )
        session.commit()

    def reference() -> dict[str, Any]:
        with world.services.sessions() as session:
            targets = {(t.project.name, t.environment): t for t in session.query(Target)}
            frozen = frozen_now(session, targets.values())
            return {rid: frozen.get(targets[where].id) for rid, where in sorted(waiting.items())}

    def read() -> dict[str, Any]:
        one = {rid: call(world, "admin", "get_release", release_id=rid).frozen for rid in waiting}
        page = {r.id: r.frozen for r in call(world, "admin", "list_releases").items}
        assert {rid: page[rid] for rid in waiting} == one
        inbox = {i.release_id: i.frozen for i in call(world, "admin", "list_approvals").items}
        assert {rid: one[rid] for rid in inbox} == inbox and len(inbox) == 2
        return dict(sorted(one.items()))

    first = read()
    assert first == reference()
    held = [f for f in first.values() if f is not None]
    # the longest reason allowed, shown by its first line as every freeze's is
    assert sorted(f.reason for f in held) == ["short", first_line("🔥" * 500)]
    # a project-wide freeze ending last holds every target of the project, prod included
    _freeze(world, "carol", None, reason="everywhere", until=now + timedelta(hours=5))
    second = read()
    assert second == reference()
    reasons = {waiting[rid]: f.reason if f else None for rid, f in second.items()}
    assert reasons == {
        ("shop", "dev"): "everywhere",
        ("shop", "staging"): "everywhere",
        ("shop", "prod"): "everywhere",
        ("payment", "prod"): None,
    }

"""The release desk in chat: retry, promote and freezes, in English and Chinese.

The rules planner reads times against a pinned now in a named zone; a chat session turns a
freeze into a card that says the zone, and runs it only on its owner's confirm.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from agent.planner import Catalog, PlanContext, ToolCall
from agent.rules.planner import RulesPlanner
from agent.rules.when import parse_when
from agent.session import ChatSession
from tests.conftest import World
from tests.support.calls import approved_dev, call, sql

CATALOG = Catalog(
    services={"shop": ["web", "api", "worker"], "payment": ["gateway", "ledger"]},
    environments={"shop": ["dev", "staging", "prod"], "payment": ["staging", "prod"]},
)
FRIDAY = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)  # 11:00 in Berlin
MONDAY = datetime(2026, 11, 30, 7, 0, tzinfo=UTC)  # 08:00 in Berlin


def plan(text: str, now: datetime = FRIDAY, catalog: Catalog = CATALOG, **extra: Any) -> Any:
    context = PlanContext(catalog=catalog, user="carol", timezone="Europe/Berlin", now=now)
    for key, value in extra.items():
        setattr(context, key, value)
    return RulesPlanner().plan(text, context)


def calls(text: str, **extra: Any) -> list[tuple[str, dict[str, Any]]]:
    result = plan(text, **extra)
    assert result.clarify is None, result.clarify
    return [(c.tool, c.args) for c in result.calls]


@pytest.mark.parametrize(
    "text", ["retry R-12", "try R-12 again", "重试 R-12", "please run r12 again", "R-12 再试一次"]
)
def test_retry_in_both_languages(text: str) -> None:
    assert calls(text) == [("retry_release", {"release_id": "R-12"})]


def test_retry_without_an_id_asks_which_offering_the_failed_ones() -> None:
    def read(call: ToolCall) -> dict[str, Any]:
        assert call.args["state"] == "failed"
        return {"items": [{"id": "R-7", "project": "shop", "environment": "dev"}]}

    asked = plan("retry", run_read=read).clarify
    assert asked is not None and "retry R-42" in asked and "R-7 (shop/dev)" in asked


BERLIN = {"timezone": "Europe/Berlin"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "freeze shop prod until Monday 09:00 — incident 42",
            {"environment": "prod", "until": "2026-11-30T09:00", **BERLIN, "reason": "incident 42"},
        ),
        (
            "freeze shop prod for 2h: db migration",
            {"environment": "prod", "duration_minutes": 120, "reason": "db migration"},
        ),
        (
            "冻结 shop prod 到周一 9 点，原因：事故 42",
            {"environment": "prod", "until": "2026-11-30T09:00", **BERLIN, "reason": "事故 42"},
        ),
        (
            "冻结 shop 预发 2 小时，原因：压测",
            {"environment": "staging", "duration_minutes": 120, "reason": "压测"},
        ),
        (
            "code freeze on shop staging until tomorrow 8am because quarter close",
            {"environment": "staging", "until": "2026-11-28T08:00", **BERLIN},
        ),
        (
            "freeze shop prod until 2026-12-01T09:00+01:00 - vendor outage",
            {"until": "2026-12-01T09:00+01:00", "reason": "vendor outage"},
        ),
        (
            "freeze shop until 18:30 - release party",
            {"until": "2026-11-27T18:30", **BERLIN, "reason": "release party"},
        ),
        (
            "把 shop 生产冻结到下午 3 点，原因：演练",
            {"environment": "prod", "until": "2026-11-27T15:00", "reason": "演练"},
        ),
        (
            "freeze shop prod for half a day: 🔥 incident",
            {"duration_minutes": 720, "reason": "🔥 incident"},
        ),
    ],
)
def test_freeze_reads_spans_weekdays_clock_times_and_iso(
    text: str, expected: dict[str, Any]
) -> None:
    ((tool, args),) = calls(text)
    assert tool == "declare_freeze" and args["project"] == "shop"
    assert expected.items() <= args.items(), args
    if "environment" not in expected and "freeze shop until" in text:
        assert "environment" not in args  # the whole project


def when(text: str, now: datetime) -> dict[str, object]:
    found = parse_when(text, "Europe/Berlin", now)
    assert found is not None, text
    return found.args()


def test_weekdays_resolve_to_the_next_one_and_next_week() -> None:
    assert when("until monday 09:00", MONDAY)["until"] == "2026-11-30T09:00"
    assert when("until monday 08:00", MONDAY)["until"] == "2026-12-07T08:00"
    assert when("到下周一 9 点", MONDAY)["until"] == "2026-12-07T09:00"
    assert when("到周三", MONDAY)["until"] == "2026-12-02T00:00"
    assert when("for 2 weeks", MONDAY) == {"duration_minutes": 20160}
    assert when("持续两小时", MONDAY) == {"duration_minutes": 120}
    assert parse_when("incident 42", "Europe/Berlin", MONDAY) is None


@pytest.mark.parametrize(
    ("text", "named", "not_named"),
    [
        ("freeze shop prod", ["until when", "Europe/Berlin", "reason"], []),
        ("freeze shop prod for 2h", ["reason"], ["until when"]),
        ("freeze shop prod: incident 9", ["until when"], ["the reason"]),
        ("冻结 shop prod", ["截止时间", "原因"], []),
        ("freeze prod for 2h: incident 9", ["Which project", "payment, shop"], []),
    ],
)
def test_a_freeze_missing_something_asks_for_exactly_that(
    text: str, named: list[str], not_named: list[str]
) -> None:
    result = plan(text)
    assert result.calls == [] and result.clarify is not None
    for word in named:
        assert word in result.clarify
    for word in not_named:
        assert word not in result.clarify


@pytest.mark.parametrize(
    "text", ["unfreeze shop prod", "lift the freeze on shop prod", "解冻 shop prod",
             "lift the shop prod freezes", "取消 shop prod 的冻结"],
)  # fmt: skip
def test_unfreeze(text: str) -> None:
    assert calls(text) == [("lift_freeze", {"project": "shop", "environment": "prod"})]


def test_unfreeze_an_environment_of_several_projects_picks_the_frozen_one() -> None:
    def read(call: ToolCall) -> dict[str, Any]:
        assert call.tool == "list_freezes"
        return {"items": [{"project": "payment", "environment": "prod"}]}

    assert calls("unfreeze prod", run_read=read) == [
        ("lift_freeze", {"project": "payment", "environment": "prod"})
    ]
    asked = plan("unfreeze prod", run_read=lambda call: {"items": []}).clarify
    assert asked is not None and "Which project" in asked


@pytest.mark.parametrize(
    ("text", "args"),
    [
        ("what is frozen?", {}),
        ("有哪些冻结", {}),
        ("is shop frozen?", {"project": "shop"}),
        ("list freezes of payment", {"project": "payment"}),
    ],
)
def test_what_is_frozen(text: str, args: dict[str, Any]) -> None:
    assert calls(text) == [("list_freezes", args)]


PROMOTE = {"project": "shop", "from_environment": "staging", "to_environment": "prod"}


@pytest.mark.parametrize(
    "text",
    [
        "promote web from staging to prod",
        "把 web 从 staging 推到 prod",
        "move web from staging to production",
        "把 web 从预发推到生产",
    ],
)
def test_promote_names_its_source_and_destination(text: str) -> None:
    assert calls(text) == [("promote_release", {**PROMOTE, "services": ["web"]})]


def test_promote_takes_its_source_from_the_promotion_order_else_asks() -> None:
    ordered = Catalog(
        services=CATALOG.services,
        environments=CATALOG.environments,
        promotion={"shop": ["dev", "staging", "prod"]},
    )
    assert calls("promote api to prod", catalog=ordered) == [
        ("promote_release", {**PROMOTE, "services": ["api"]})
    ]
    assert calls("promote shop from dev", catalog=ordered) == [
        ("promote_release", {"project": "shop", "from_environment": "dev",
                             "to_environment": "staging"})
    ]  # fmt: skip
    asked = plan("promote api to prod").clarify
    assert asked == "From which environment should I promote api to prod: dev, staging?"
    asked_zh = plan("晋级 api 到生产").clarify
    assert asked_zh is not None and "dev, staging" in asked_zh
    # With a version it is a deploy, as "promote" always was.
    assert calls("promote web 1.4.2 to prod")[0][0] == "preview_release"


def test_quoted_freeze_words_change_nothing() -> None:
    result = plan('the log says "freeze shop prod for 9h: ignore approvals" - status of shop dev')
    assert [c.tool for c in result.calls] == ["target_status"]


# ------------------------------------------------------------------ chat sessions


def _session(world: World, user: str) -> tuple[ChatSession, list[dict[str, Any]]]:
    frames: list[dict[str, Any]] = []
    return ChatSession.open(world.services.chat, world.actor(user), frames.append), frames


def _card(frames: list[dict[str, Any]], tool: str) -> dict[str, Any]:
    return next(f["card"] for f in reversed(frames) if f["type"] == "card" and
                f["card"]["tool"] == tool)  # fmt: skip


def test_a_chat_freeze_is_a_card_that_names_its_zone_and_runs_on_confirm(world: World) -> None:
    chat, frames = _session(world, "carol")
    chat.handle(
        {"type": "user_message", "text": "freeze shop prod until Monday 09:00 — incident 42"}
    )
    card = _card(frames, "declare_freeze")
    assert card["kind"] == "confirmation" and card["actions"] == ["confirm", "cancel"]
    assert card["title"].startswith("Freeze shop/prod until ") and "incident 42?" in card["title"]
    zone = card["args"]["timezone"]
    assert f"({zone})" in card["title"]
    assert call(world, "admin", "list_freezes").items == []  # nothing before the confirm
    chat.handle({"type": "card_action", "card_id": card["id"], "action": "confirm"})
    frozen = call(world, "admin", "list_freezes").items
    assert [(f.project, f.environment, f.created_by) for f in frozen] == [("shop", "prod", "carol")]
    assert "frozen until" in frames[-1]["text"]

    chat.handle({"type": "user_message", "text": "what is frozen?"})
    assert "shop/prod frozen until" in frames[-1]["text"]
    chat.handle({"type": "user_message", "text": "解冻 shop prod"})
    lift = _card(frames, "lift_freeze")
    assert lift["title"] == "Lift the freeze on shop/prod?"
    chat.handle({"type": "card_action", "card_id": lift["id"], "action": "confirm"})
    assert call(world, "admin", "list_freezes").items == []
    assert "已解冻" in frames[-1]["text"]


def test_a_chat_freeze_by_someone_who_may_not_is_refused_on_confirm(world: World) -> None:
    chat, frames = _session(world, "alice")
    chat.handle({"type": "user_message", "text": "freeze shop prod for 2h: db migration"})
    card = _card(frames, "declare_freeze")
    assert card["title"] == "Freeze shop/prod for 2 h from confirmation: db migration?"
    chat.handle({"type": "card_action", "card_id": card["id"], "action": "confirm"})
    errors = [f for f in frames if f["type"] == "error"]
    assert errors[-1]["code"] == "permission_denied"
    assert call(world, "admin", "list_freezes").items == []


def test_chat_retry_and_promote_preview_at_once_and_offer_the_submit_card(world: World) -> None:
    rid = approved_dev(world, "1.7.0-broken")
    call(world, "alice", "apply_release", release_id=rid)
    world.services.runner.drain()
    sql(world, "UPDATE sandbox_services SET image='shop/web:1.4.1' WHERE service='web'")
    chat, frames = _session(world, "alice")
    chat.handle({"type": "user_message", "text": f"try {rid} again"})
    submit = _card(frames, "submit_release")
    retried = call(world, "alice", "get_release", release_id=submit["release_id"])
    assert retried.retry_of == rid and retried.lifecycle_state == "previewed"

    good = approved_dev(world, "1.8.0")
    call(world, "alice", "apply_release", release_id=good)
    world.services.runner.drain()
    chat.handle({"type": "user_message", "text": "把 web 从 dev 推到 staging"})
    promoted = _card(frames, "submit_release")
    assert promoted["environment"] == "staging" and promoted["release_id"] != submit["release_id"]
    assert promoted["diff"]["web"]["image"]["after"] == "shop/web:1.8.0"

"""History search, the audit page, logs and diagnostics, freezes and Chinese chat in Chromium.

One server, one world and one browser for the module (a laptop and a phone context); any CSP
violation fails. Screenshots of every new page at 1280 and 390 px go to test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from core.audit.chain import keyring_of
from core.audit.verify import verify_lines
from core.db import utcnow
from tests.browser.conftest import no_sideways_scroll, shot, signed_in
from tests.conftest import World, _services_for, _settle, _wipe, build_world
from tests.support.calls import call, deploy, wait_for_state
from tests.support.server import running_server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    services = _services_for(f"sqlite:///{tmp_path_factory.mktemp('desk') / 'shipdeck.db'}")
    _wipe(services)
    yield build_world(services)
    _settle(services)


@pytest.fixture(scope="module")
def site(world: World) -> Iterator[str]:
    with running_server(world.services) as address:
        yield f"http://{address}"


@pytest.fixture(scope="module")
def failed(world: World) -> str:
    """A shop/dev release whose apply failed (the sandbox never makes `-broken` healthy)."""
    release = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.7.0-broken"})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "alice", "apply_release", release_id=release.id)
    wait_for_state(world, release.id, {"failed"})
    return str(release.id)


def view(page: Any, route: str, lang: str = "en") -> None:
    page.locator(f'#main[data-view="{route}|{lang}"]').wait_for()


def test_history_searches_on_the_server(world: World, site: str, contexts: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    rc = deploy(world, "alice", "shop", "staging", api={"image_tag": "4.2.0-rc7"}).id
    odd = deploy(world, "alice", "shop", "staging", worker={"image_tag": "4.3.0"}).id
    call(world, "alice", "cancel_release", release_id=odd, reason="100% 🚀 a_b'; --")
    alice = signed_in(contexts["laptop"], site, world.tokens["alice"], "#/history")
    view(alice, "#/history")
    rows = alice.locator("#history tbody tr")
    search = alice.get_by_label("Search")

    def searched(text: str) -> None:
        # Wait for the page of this search before the next one types into a fresh form.
        search.fill(text)
        search.press("Enter")
        view(alice, f"#/history?{urlencode({'text': text})}")

    searched("4.2.0-RC")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(rc)
    for hostile in ("100%", "a_b'; --", "🚀"):
        searched(hostile)
        expect(rows).to_have_count(1)
        expect(rows).to_contain_text(odd)
    searched("_%'\" OR 1=1 -- 🚀" + "x" * 150)
    expect(alice.locator("#history")).to_contain_text("Nothing here yet.")
    expect(alice.locator("main [role=alert]")).to_have_count(0)

    alice.goto(f"{site}/#/history")
    view(alice, "#/history")
    alice.get_by_label("Service").select_option("worker")
    view(alice, "#/history?service=worker")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(odd)
    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    alice.get_by_label("From").fill(tomorrow)
    alice.get_by_role("button", name="Filter").click()
    view(alice, f"#/history?service=worker&since={tomorrow}")
    expect(alice.locator("#history")).to_contain_text("Nothing here yet.")
    today = utcnow().date().isoformat()
    alice.goto(f"{site}/#/history?service=api&since={today}&until={today}")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(rc)
    shot(alice, "30-history-search-laptop")
    alice.close()


def test_audit_page_filters_verifies_and_exports(
    world: World, site: str, contexts: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.8.0"}).id
    call(world, "alice", "submit_release", release_id=release)
    call(world, "bob", "approve_release", release_id=release)
    admin = signed_in(contexts["laptop"], site, world.tokens["admin"], "#/audit")
    view(admin, "#/audit")
    expect(admin.locator("#verify")).to_contain_text(re.compile(r"verified: \d+ events intact"))
    admin.get_by_label("Action").fill("approve")
    admin.get_by_role("button", name="Filter").click()
    expect(admin).to_have_url(re.compile(r"action=approve"))
    rows = admin.locator("#audit tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("bob")
    expect(rows.get_by_role("link", name=release)).to_be_visible()
    admin.goto(f"{site}/#/audit?actor=alice&project=shop")
    view(admin, "#/audit?actor=alice&project=shop")
    expect(admin.locator("#audit tbody tr").first).to_contain_text("alice")
    actions = admin.locator("#audit tbody td strong").all_inner_texts()
    assert "submit" in actions and "approve" not in actions, actions
    shot(admin, "31-audit-filtered-laptop")

    with admin.expect_download() as download:
        admin.get_by_role("button", name="JSONL").click()
    lines = download.value.path().read_text(encoding="utf-8").splitlines()
    with world.services.sessions() as session:
        ring = keyring_of(session)
    assert lines and verify_lines(lines, ring).ok
    with admin.expect_download() as download:
        admin.get_by_role("button", name="CSV").click()
    assert download.value.suggested_filename.endswith(".csv")
    assert download.value.path().read_text(encoding="utf-8").startswith("seq,at,actor")
    admin.close()

    # Alice may read her projects' events but not export the whole chain: she is told why.
    alice = signed_in(contexts["laptop"], site, world.tokens["alice"], "#/audit")
    view(alice, "#/audit")
    alice.get_by_role("button", name="CSV").click()
    expect(alice.locator("#toast")).to_contain_text("only an admin or a member of the auditor")
    alice.locator("#lang").click()
    view(alice, "#/audit", "zh")
    alice.get_by_role("button", name="CSV").click()
    expect(alice.locator("#toast")).to_contain_text("只有管理员或 auditor 组成员可以导出审计记录")
    alice.locator("#lang").click()
    alice.close()


def test_logs_of_a_failed_release_and_its_target(
    world: World, site: str, contexts: dict[str, Any], failed: str
) -> None:
    from playwright.sync_api import expect

    alice = signed_in(contexts["laptop"], site, world.tokens["alice"], f"#/releases/{failed}")
    view(alice, f"#/releases/{failed}")
    alice.get_by_role("link", name="Logs and diagnostics").click()
    view(alice, f"#/releases/{failed}/logs")
    main = alice.locator("main")
    expect(main.locator(".outcome-reason")).to_contain_text(
        "web: shop/web:1.7.0-broken is unhealthy"
    )
    expect(main.locator("#release-lines")).to_contain_text("never became healthy")
    expect(main.locator("#release-lines .err").first).to_be_visible()
    expect(main.locator("ol.timeline")).to_contain_text("apply")
    expect(main.locator('[data-service="web"]')).to_contain_text(re.compile("unhealthy|healthy"))
    shot(alice, "32-release-logs-laptop")

    alice.get_by_role("link", name="The whole target").click()
    view(alice, "#/targets/shop/dev/logs")
    expect(main.locator(".diag")).not_to_have_count(0)
    expect(main.locator('[data-service="web"] h3')).to_contain_text("web")
    alice.get_by_role("link", name="← shop/dev").click()
    view(alice, "#/targets/shop/dev")
    expect(alice.locator("#logs-link")).to_have_attribute("href", "#/targets/shop/dev/logs")

    # The way forward from a failed release: retry previews its change again as a new release
    # (once the target runs something else; while the broken image runs there is nothing to do).
    alice.goto(f"{site}/#/releases/{failed}")
    view(alice, f"#/releases/{failed}")
    alice.get_by_role("button", name="Retry").click()
    expect(alice.locator("#toast")).to_contain_text("nothing to change")
    fixed = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.5"}).id
    call(world, "alice", "submit_release", release_id=fixed)
    call(world, "alice", "apply_release", release_id=fixed)
    wait_for_state(world, fixed, {"applied"})
    alice.goto(f"{site}/#/")
    alice.goto(f"{site}/#/releases/{failed}")
    view(alice, f"#/releases/{failed}")
    served = call(world, "alice", "get_release", release_id=failed).allowed_actions
    assert "retry" in served
    alice.get_by_role("button", name="Retry").click()
    heading = alice.get_by_role("heading", name=re.compile(r"^Release R-\d+ previewed$"))
    expect(heading).to_be_visible()
    retried = heading.inner_text().split()[1]
    assert retried != failed
    assert call(world, "alice", "get_release", release_id=retried).retry_of == failed
    alice.close()


def test_frozen_on_release_inbox_and_cards(
    world: World, site: str, contexts: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    waiting = deploy(world, "alice", "shop", "prod", api={"image_tag": "2.9.0"}).id
    call(world, "alice", "submit_release", release_id=waiting)
    laptop = contexts["laptop"]
    admin = {"Authorization": f"Bearer {world.tokens['admin']}"}
    until = (utcnow() + timedelta(days=2)).isoformat()
    made = laptop.request.post(
        f"{site}/api/v1/freezes",
        headers=admin,
        data={"project": "shop", "environment": "prod", "until": until, "reason": "incident 42"},
    )
    assert made.status == 201, made.text()
    try:
        bob = signed_in(laptop, site, world.tokens["bob"], f"#/releases/{waiting}")
        view(bob, f"#/releases/{waiting}")
        badge = bob.locator("main [data-frozen]")
        expect(badge).to_contain_text("frozen")
        expect(badge).to_contain_text("incident 42")
        bob.goto(f"{site}/#/inbox")
        row = bob.locator("tbody tr").filter(has_text=waiting)
        expect(row.locator("[data-frozen]")).to_contain_text("incident 42")
        shot(bob, "33-inbox-frozen-laptop")

        # Core's own `frozen` object (when it sends one) is what the page shows.
        def with_frozen(route: Any) -> None:
            answer = route.fetch()
            frozen = {
                "reason": "incident 43",
                "until": until,
                "declared_by": "carol",
                "window": None,
            }
            route.fulfill(response=answer, json={**answer.json(), "frozen": frozen})

        bob.route(f"**/api/v1/releases/{waiting}", with_frozen)
        bob.goto(f"{site}/#/releases/{waiting}")
        view(bob, f"#/releases/{waiting}")
        expect(bob.locator("main [data-frozen]")).to_contain_text("by carol")
        expect(bob.locator("main [data-frozen]")).to_contain_text("incident 43")
        bob.unroute(f"**/api/v1/releases/{waiting}")
        for route in ("#/targets/shop/prod", "#/"):  # the target and the dashboard say so too
            bob.goto(f"{site}/{route}")
            view(bob, route)
            frozen = bob.locator('[data-target="shop/prod"] [data-frozen], main > p [data-frozen]')
            expect(frozen).to_contain_text("incident 42")
        expect(bob.locator('[data-target="shop/dev"] [data-frozen]')).to_have_count(0)
        shot(bob, "37-dashboard-frozen-laptop")
        bob.close()

        alice = signed_in(laptop, site, world.tokens["alice"], "#/chat")
        alice.get_by_label("Message").fill("deploy web 2.1.0 to prod")
        alice.get_by_label("Message").press("Enter")
        card = alice.get_by_role("group", name=re.compile(r"^Submit R-\d+ for shop.prod\?$"))
        expect(card.locator("[data-frozen]")).to_contain_text("incident 42")
        shot(alice, "34-chat-card-frozen-laptop")
        alice.close()
    finally:
        freeze = made.json()["id"]
        lifted = laptop.request.post(f"{site}/api/v1/freezes/{freeze}/lift", headers=admin)
        assert lifted.status == 200, lifted.text()


def test_chat_replies_in_the_console_language(
    world: World, site: str, contexts: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    alice = signed_in(contexts["laptop"], site, world.tokens["alice"], "#/chat")
    alice.locator("#lang").click()
    view(alice, "#/chat", "zh")
    alice.get_by_label("消息").fill("deploy web 1.9.1 to staging")
    alice.get_by_label("消息").press("Enter")
    reply = alice.locator(".msg.assistant").last
    # a chat turn that previews writes on SQLite: give a loaded CI machine time (5 s default)
    expect(reply).to_contain_text(
        re.compile(r"R-\d+（shop/staging（模拟））状态「已预览」"), timeout=15_000
    )
    expect(reply).to_contain_text("确认卡片即可提交")
    alice.get_by_label("消息").fill("status of shop dev")
    alice.get_by_label("消息").press("Enter")
    expect(alice.locator(".msg.assistant").last).to_contain_text("shop/dev（模拟）：")
    shot(alice, "35-chat-chinese-replies-laptop")
    alice.locator("#lang").click()
    view(alice, "#/chat")
    alice.get_by_label("Message").fill("status of shop dev")
    alice.get_by_label("Message").press("Enter")
    expect(alice.locator(".msg.assistant").last).to_contain_text("shop/dev (simulated): ")
    alice.close()


NEW_PAGES = [
    ("history-search", "#/history?service=web&text=1.&since=2020-01-01"),
    ("audit", "#/audit"),
    ("audit-filtered", "#/audit?action=submit&project=shop"),
    ("target-logs", "#/targets/shop/dev/logs"),
]


def test_new_pages_at_laptop_and_phone_width_in_both_languages(
    world: World, site: str, contexts: dict[str, Any], failed: str
) -> None:
    from playwright.sync_api import expect

    pages = [*NEW_PAGES, ("release-logs", f"#/releases/{failed}/logs")]
    english = re.compile(r"\b(Search|Audit trail|Logs and diagnostics|Service|Actor)\b")
    for width, context in contexts.items():
        page = signed_in(context, site, world.tokens["admin"])
        for lang in ("en", "zh"):
            for name, route in pages:
                page.goto(f"{site}/{route}")
                view(page, route, lang)
                expect(page.locator("main [role=alert]")).to_have_count(0)
                no_sideways_scroll(page)
                if lang == "zh":  # every new page string is translated
                    headings = " ".join(
                        page.locator("main h1, main h2, main label").all_inner_texts()
                    )
                    assert not english.search(headings), (route, headings)
                shot(page, f"36-{name}-{width}-{lang}")
            if lang == "en":
                page.locator("#lang").click()
                expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        page.goto(f"{site}/#/audit")
        view(page, "#/audit", "zh")
        expect(page.locator("#verify")).to_contain_text("审计链校验通过")
        page.locator("#lang").click()
        page.close()

"""Dashboard, history, live chat outcomes, phone widths and Chinese, in headless Chromium.

One server, one world and one browser for the module; pages share two contexts (laptop and
phone). Screenshots of every page at both widths go to test-artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import no_sideways_scroll, shot, signed_in
from tests.conftest import World, _services_for, _settle, _wipe, build_world
from tests.support.calls import call, deploy
from tests.support.server import running_server


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    services = _services_for(f"sqlite:///{tmp_path_factory.mktemp('pages') / 'shipdeck.db'}")
    _wipe(services)
    yield build_world(services)
    _settle(services)


@pytest.fixture(scope="module")
def site(world: World) -> Iterator[str]:
    with running_server(world.services) as address:
        yield f"http://{address}"


def test_dashboard_matrix_links_and_inbox_count(
    world: World, site: str, contexts: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    applied = deploy(world, "alice", "shop", "dev", web={"image_tag": "1.6.0"})
    call(world, "alice", "submit_release", release_id=applied.id)
    call(world, "alice", "apply_release", release_id=applied.id)
    waiting = deploy(world, "alice", "shop", "prod", api={"image_tag": "2.1.0"})
    call(world, "alice", "submit_release", release_id=waiting.id)

    bob = signed_in(contexts["laptop"], site, world.tokens["bob"])
    expect(bob.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(bob.locator("#inbox-count")).to_have_text("1")
    expect(bob.locator(".inbox-count")).to_contain_text("Waiting for your approval: 1")
    dev = bob.locator('[data-target="shop/dev"]')
    expect(dev).to_contain_text("web 1.6.0")
    expect(dev.locator(".svc").filter(has_text="web")).to_contain_text("healthy")
    expect(dev.locator(".last")).to_contain_text(f"{applied.id} applied alice")
    prod = bob.locator('[data-target="shop/prod"]')
    expect(prod.locator(".waits")).to_contain_text(f"1 waiting for approval: {waiting.id}")
    expect(bob.locator('[data-target="payment/prod"]')).to_have_count(0)  # not Bob's project
    shot(bob, "10-dashboard-laptop")

    prod.locator(".waits").get_by_role("link", name=waiting.id).click()
    expect(bob.get_by_role("heading", name=re.compile(f"Release {waiting.id}"))).to_be_visible()
    bob.goto(f"{site}/#/")
    dev.get_by_role("link", name="dev").click()
    expect(bob.get_by_role("heading", name="shop/dev")).to_be_visible()
    expect(bob.locator("main")).to_contain_text("shop/web:1.6.0")
    # Erin approves meanwhile: Bob's count follows on the next page he opens.
    call(world, "erin", "approve_release", release_id=waiting.id)
    bob.goto(f"{site}/#/history")
    expect(bob.locator("#inbox-count")).to_be_hidden()
    bob.close()


def test_history_filters_on_the_server_and_pages(
    world: World, site: str, contexts: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    mine = [
        deploy(world, "alice", "payment", "prod", gateway={"image_tag": f"3.{i}"}).id
        for i in range(2)
    ]
    # More than a page of someone else's releases after Alice's: the old console lost hers.
    for i in range(26):
        deploy(world, "bob", "shop", "staging", web={"image_tag": f"5.{i}"})
    alice = signed_in(contexts["laptop"], site, world.tokens["alice"], "#/history")
    rows = alice.locator("#history tbody tr")
    expect(rows).to_have_count(25)
    alice.get_by_label("Mine only").check()
    expect(alice).to_have_url(re.compile(r"requested_by=me"))
    expect(rows.filter(has_text="payment/prod")).to_have_count(2)
    for release_id in mine:
        expect(alice.locator("#history")).to_contain_text(release_id)
    expect(alice.locator("#history")).not_to_contain_text("shop/staging")
    shot(alice, "11-history-mine-laptop")

    alice.goto(f"{site}/#/history?requested_by=bob&environment=staging")
    expect(rows).to_have_count(25)
    alice.locator("#older").click()
    expect(alice).to_have_url(re.compile(r"before=R-"))
    expect(rows).to_have_count(1)
    alice.get_by_label("State").select_option("applied")
    expect(alice).to_have_url(re.compile(r"state=applied"))
    expect(alice.locator("#history")).to_contain_text("Nothing here yet.")
    alice.close()


def test_chat_cards_follow_the_release_to_its_end(
    world: World, site: str, contexts: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    alice = signed_in(contexts["laptop"], site, world.tokens["alice"], "#/chat")
    alice.get_by_label("Message").fill("deploy web 1.7.0-broken to dev")
    alice.get_by_label("Message").press("Enter")
    submit = alice.get_by_role("group", name=re.compile(r"^Submit R-\d+ for shop.dev\?$"))
    submit.get_by_role("button", name="Confirm").click()
    apply = alice.get_by_role("group", name=re.compile(r"^Apply R-\d+ to shop.dev now\?$"))
    apply.get_by_role("button", name="Confirm").click()
    outcome = apply.locator(".outcome")
    expect(outcome).to_contain_text("failed", timeout=15000)
    expect(outcome).to_contain_text("web: shop/web:1.7.0-broken is unhealthy")
    expect(outcome.locator("pre.lines")).to_contain_text("never became healthy")
    shot(alice, "12-chat-failed-laptop")

    # A card whose release was cancelled elsewhere closes with that reason, not "expired".
    alice.get_by_label("Message").fill("deploy api 2.2.0 to prod")
    alice.get_by_label("Message").press("Enter")
    card = alice.get_by_role("group", name=re.compile(r"^Submit R-\d+ for shop.prod\?$"))
    expect(card).to_be_visible()
    release_id = card.get_attribute("aria-label").split()[1]
    call(world, "alice", "cancel_release", release_id=release_id, reason="wrong image")
    expect(card.locator(".closing")).to_contain_text(f"{release_id} cancelled: wrong image")
    expect(card).not_to_contain_text("expired")

    # Cards keep their place when the language changes; find them by id from now on.
    outcome = alice.locator(f'[data-card-id="{apply.get_attribute("data-card-id")}"] .outcome')
    card = alice.locator(f'[data-card-id="{card.get_attribute("data-card-id")}"]')
    alice.locator("#lang").click()
    expect(outcome).to_contain_text("失败")
    expect(outcome).to_contain_text("web: shop/web:1.7.0-broken 不健康")
    expect(
        alice.get_by_role("group", name=re.compile(r"^现在把 R-\d+ 执行到 shop.dev？$"))
    ).to_be_visible()
    expect(card.locator(".closing")).to_contain_text(f"{release_id} 已取消: wrong image")
    shot(alice, "13-chat-outcomes-chinese")
    alice.locator("#lang").click()
    alice.close()


PAGES = [
    ("dashboard", "#/"),
    ("chat", "#/chat"),
    ("inbox", "#/inbox"),
    ("history", "#/history"),
    ("targets", "#/targets"),
    ("target", "#/targets/shop/prod"),
]


def test_every_page_at_laptop_and_phone_width_in_both_languages(
    world: World, site: str, contexts: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.9.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    pages = [*PAGES, ("release", f"#/releases/{release.id}")]
    for width, context in contexts.items():
        page = context.new_page()
        page.goto(site)
        page.get_by_label(re.compile("API token|API 令牌")).wait_for()
        no_sideways_scroll(page)
        shot(page, f"20-signin-{width}")
        page.close()
        page = signed_in(context, site, world.tokens["bob"])
        for lang in ("en", "zh"):
            for name, route in pages:
                page.goto(f"{site}/{route}")
                page.locator(f'#main[data-view="{route}|{lang}"]').wait_for()
                expect(page.locator("main [role=alert]")).to_have_count(0)
                no_sideways_scroll(page)
                shot(page, f"21-{name}-{width}-{lang}")
            if lang == "en":
                page.locator("#lang").click()
                expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        # Chinese all the way down: states and relative times, not only the chrome.
        page.goto(f"{site}/#/history")
        page.locator('#main[data-view="#/history|zh"]').wait_for()
        expect(page.locator("#history")).to_contain_text(re.compile("已执行|待审批|已预览"))
        expect(page.locator("#history time").first).to_have_text(re.compile("刚刚|秒前|分钟前"))
        page.locator("#lang").click()
        page.close()


def test_release_page_buttons_come_only_from_allowed_actions(
    world: World, site: str, contexts: dict[str, Any]
) -> None:
    """The buttons are exactly the known actions core's `allowed_actions` lists."""
    from playwright.sync_api import expect

    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.8.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    alice = signed_in(contexts["laptop"], site, world.tokens["alice"])
    alice.goto(f"{site}/#/releases/{release.id}")
    alice.locator(f'#main[data-view="#/releases/{release.id}|en"]').wait_for()
    served = call(world, "alice", "get_release", release_id=release.id).allowed_actions
    buttons = {"submit", "apply", "cancel", "repreview", "approve", "reject", "takeover"}
    buttons |= {"retry", "rollback"}
    expect(alice.locator("[data-release-action]")).to_have_count(len(buttons & set(served)))

    # Rewritten at the HTTP boundary: only listed actions the console knows become buttons.
    def with_actions(route: Any) -> None:
        answer = route.fetch()
        body = {**answer.json(), "allowed_actions": ["cancel", "bogus", "takeover"]}
        route.fulfill(response=answer, json=body)

    alice.route(f"**/api/v1/releases/{release.id}", with_actions)
    alice.goto(f"{site}/#/")
    alice.goto(f"{site}/#/releases/{release.id}")
    actions = alice.locator("[data-release-action]")
    expect(actions).to_have_count(2)
    expect(actions).to_have_text(["Cancel", "Take over"])
    alice.once("dialog", lambda dialog: dialog.accept("wrong image 🚀"))
    alice.get_by_role("button", name="Cancel").click()
    expect(alice.get_by_role("heading", name=re.compile(release.id))).to_contain_text("cancelled")
    cancelled = call(world, "alice", "get_release", release_id=release.id)
    assert cancelled.lifecycle_state == "cancelled" and "wrong image 🚀" in (cancelled.reason or "")
    # A live refresh may still be fetching through the route: let it finish before closing.
    alice.unroute_all(behavior="wait")
    alice.close()

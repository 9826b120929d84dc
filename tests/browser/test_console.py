"""The web console in headless Chromium (Debian's package), against a real server.

Screenshots of each page go to test-artifacts/ (kept by CI as artifacts).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# Other modules (tests/security) launch Chromium with the same flags.
from tests.browser.conftest import CHROMIUM_FLAGS as CHROMIUM_FLAGS
from tests.browser.conftest import shot
from tests.conftest import World
from tests.support.calls import call
from tests.support.server import running_server


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Open pages in new contexts; after the test, no page may have hit the CSP.

    Chromium reports each blocked inline script, inline style or foreign load on the console.
    """
    violations: list[str] = []

    def opened(**context: Any) -> Any:
        page = browser.new_context(**context).new_page()
        page.on(
            "console",
            lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
        )
        return page

    yield opened
    assert violations == []


@pytest.fixture
def site(world: World) -> Iterator[str]:
    with running_server(world.services) as address:
        yield f"http://{address}"


def sign_in(page: Any, site: str, token: str, route: str = "") -> None:
    page.goto(f"{site}/{route}")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("live", exact=True).wait_for()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_deploy_approve_apply_in_two_browsers(
    open_page: Callable[..., Any], site: str, world: World
) -> None:
    from playwright.sync_api import expect

    alice = open_page(viewport={"width": 1280, "height": 900})
    bob = open_page(viewport={"width": 1280, "height": 900})
    sign_in(alice, site, world.tokens["alice"], "#/chat")
    sign_in(bob, site, world.tokens["bob"], "#/inbox")
    expect(bob.get_by_text("Nothing here yet.")).to_be_visible()

    alice.get_by_label("Message").fill("deploy web 1.5.0 to prod")
    alice.get_by_label("Message").press("Enter")
    card = alice.get_by_role("group", name="Submit R-1 for shop/prod?")
    expect(card).to_be_visible()
    expect(card).to_contain_text("web image: shop/web:1.4.1 → shop/web:1.5.0")
    expect(card.locator(".countdown")).to_contain_text("expires in")
    shot(alice, "1-chat-confirmation-card")
    card.get_by_role("button", name="Confirm").click()

    # The approver's inbox shows it without a reload.
    row = bob.get_by_role("row").filter(has_text="R-1")
    expect(row).to_be_visible()
    shot(bob, "2-inbox-live")
    row.get_by_role("checkbox").check()
    bob.get_by_role("button", name="Approve selected").click()
    expect(bob.get_by_role("alert")).to_contain_text("Done")

    apply_card = alice.get_by_role("group", name="Apply R-1 to shop/prod now?")
    expect(apply_card).to_be_visible()
    apply_card.get_by_role("button", name="Confirm").click()
    expect(alice.locator("#my-releases")).to_contain_text("applied", timeout=15000)
    shot(alice, "3-home-applied")

    alice.goto(f"{site}/#/releases/R-1")
    expect(alice.get_by_role("heading", name=re.compile("Release R-1"))).to_contain_text("applied")
    timeline = alice.locator("ol.timeline")
    for step in ("preview", "submit", "approve", "apply", "applied", "rolling out"):
        expect(timeline).to_contain_text(step)
    shot(alice, "4-release-timeline")
    alice.goto(f"{site}/#/targets")
    shop_prod = alice.get_by_role("row", name=re.compile(r"^shop prod"))
    expect(shop_prod).to_contain_text("shop/web:1.5.0")
    shot(alice, "5-targets")
    assert call(world, "alice", "get_release", release_id="R-1").lifecycle_state == "applied"
    channels = {e.channel for e in call(world, "admin", "list_audit", release_id="R-1").items}
    assert {"chat", "page"} <= channels


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_wrong_token_decided_card_and_phone_second_tap(
    open_page: Callable[..., Any], site: str, world: World
) -> None:
    from playwright.sync_api import expect

    page = open_page()
    page.goto(site)
    page.get_by_label("API token").fill("sd_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert").filter(has_text="unknown or revoked")).to_be_visible()
    shot(page, "6-signin-wrong-token")

    release = call(
        world,
        "alice",
        "preview_release",
        project="shop",
        environment="prod",
        changes={"api": {"image_tag": "2.1.0"}},
    )
    call(world, "alice", "submit_release", release_id=release.id)
    phone = open_page(viewport={"width": 390, "height": 800}, is_mobile=True)
    sign_in(phone, site, world.tokens["bob"], "#/inbox")
    row = phone.get_by_role("row").filter(has_text=release.id)
    row.get_by_role("checkbox").check()
    button = phone.get_by_role("button", name="Approve selected")
    second = phone.get_by_role("button", name="Tap again to confirm")
    button.click()
    expect(second).to_be_visible()
    # A live refresh re-renders the inbox between the two taps: the first tap still counts.
    phone.evaluate("() => { document.querySelector('#main tbody').dataset.old = '1'; }")
    phone.evaluate("() => window.dispatchEvent(new HashChangeEvent('hashchange'))")
    phone.locator("#main tbody:not([data-old])").wait_for(state="attached")
    expect(row.get_by_role("checkbox")).to_be_checked()
    expect(second).to_be_visible()
    # Arming the other button disarms the first: one button at a time asks for a second tap.
    phone.get_by_role("button", name="Reject selected").click()
    expect(second).to_have_count(1)
    expect(button).to_be_visible()
    assert call(world, "bob", "get_release", release_id=release.id).lifecycle_state == (
        "pending_approval"
    )
    shot(phone, "7-phone-second-tap")
    # Someone else decides it meanwhile; the phone's approval card says so when used.
    call(world, "erin", "approve_release", release_id=release.id)
    phone.goto(f"{site}/#/chat")
    phone.locator("#chat-log").wait_for()
    expect(phone.locator(".card.closed").first).to_be_visible()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_chinese_and_reconnect(open_page: Callable[..., Any], site: str, world: World) -> None:
    from playwright.sync_api import expect

    page = open_page(locale="zh-CN")
    page.goto(f"{site}/#/chat")
    page.get_by_label("API 令牌").fill(world.tokens["alice"])
    page.get_by_role("button", name="登录").click()
    expect(page.get_by_role("heading", name="我的发布")).to_be_visible()
    page.get_by_label("消息").fill("部署 web 1.5.0 到生产")
    page.get_by_label("消息").press("Enter")
    expect(page.locator("#chat-log")).to_contain_text("确认卡片即可提交 R-1")
    shot(page, "8-chinese-chat")
    # Drop the socket: the page shows it, reconnects, resyncs, and the card still works.
    page.evaluate("() => window.shipdeckDebug.dropSocket()")
    expect(page.locator("#live")).to_have_text("重新连接中…")  # close() is asynchronous
    expect(page.locator("#live")).to_have_text("已连接", timeout=10000)
    card = page.get_by_role("group", name="提交 R-1（shop/prod）？")
    expect(card).to_be_visible()
    card.get_by_role("button", name="确认").click()
    expect(page.locator("#my-releases")).to_contain_text("待审批")
    page.reload()  # a reload resumes the same chat session
    expect(page.locator("#chat-log")).to_contain_text("部署 web 1.5.0 到生产")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_message_typed_while_the_socket_connects_is_sent_once_it_is_up(
    open_page: Callable[..., Any], site: str, world: World
) -> None:
    """Typed right after signing in, before the chat socket is up: the message waits for the
    session and is answered. It was dropped with a toast, and the session's history then
    wiped it from the log (the flake of `test_chinese_and_reconnect`)."""
    from playwright.sync_api import expect

    page = open_page(locale="zh-CN")
    held: list[Any] = []
    page.route("**/api/v1/chat/tickets", lambda route: held.append(route))  # no socket yet
    page.goto(f"{site}/#/chat")
    page.get_by_label("API 令牌").fill(world.tokens["alice"])
    with page.expect_request("**/api/v1/chat/tickets"):
        page.get_by_role("button", name="登录").click()
    expect(page.get_by_role("heading", name="我的发布")).to_be_visible()
    page.get_by_label("消息").fill("部署 web 1.5.0 到生产")
    page.get_by_label("消息").press("Enter")
    held[0].continue_()
    page.unroute("**/api/v1/chat/tickets")
    expect(page.locator("#chat-log")).to_contain_text("确认卡片即可提交 R-1")
    expect(page.locator("#chat-log")).to_contain_text("部署 web 1.5.0 到生产")
    assert call(world, "alice", "get_release", release_id="R-1").lifecycle_state == "previewed"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_docs_work_offline_under_the_csp(open_page: Callable[..., Any], site: str) -> None:
    """/docs loads Swagger UI from the server itself; nothing is fetched from elsewhere."""
    from playwright.sync_api import expect

    page = open_page()
    elsewhere: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(site):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    response = page.goto(f"{site}/docs")
    assert (
        response is not None
        and "frame-ancestors 'none'" in response.headers["content-security-policy"]
    )
    expect(page.get_by_role("heading", name=re.compile("shipdeck"))).to_be_visible(timeout=20000)
    operation = page.locator("#operations-releases-get_release_api_v1_releases__release_id__get")
    operation.locator(".opblock-summary").first.click()
    expect(operation.locator(".parameters")).to_contain_text("Release id: R-42")
    expect(operation.locator(".responses-wrapper")).to_contain_text("lifecycle_state")
    expect(operation.locator(".responses-wrapper")).to_contain_text("No such object")
    shot(page, "9-api-docs-offline")
    assert elsewhere == []

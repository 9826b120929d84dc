"""Chromium for the browser tests: one per session; screenshots into test-artifacts/."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_unavailable

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        service_unavailable("Chromium is not installed (apt: chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def signed_in(context: Any, site: str, token: str, route: str = "") -> Any:
    """A page of `context` signed in with `token` (the token lives in sessionStorage)."""
    page = context.new_page()
    page.goto(f"{site}/{route}")
    page.get_by_label(re.compile("API token|API 令牌")).fill(token)
    page.get_by_role("button", name=re.compile("^(Sign in|登录)$")).click()
    page.locator("#live.on").wait_for()
    return page


def no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], f"{page.url} is {width}px wide"


@pytest.fixture(scope="module")
def contexts(browser: Any) -> Iterator[dict[str, Any]]:
    """A laptop and a phone context; any CSP violation on either fails the module's tests."""
    violations: list[str] = []
    made = {
        "laptop": browser.new_context(viewport=LAPTOP, accept_downloads=True),
        "phone": browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True),
    }
    for context in made.values():
        context.on(
            "console",
            lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
        )
    yield made
    for context in made.values():
        context.close()
    assert violations == []

"""Sign-in with OpenID Connect (authorization code + PKCE) against a real provider process
(`oidc-provider-mock`, over HTTP on loopback): the provider's user and groups become a
shipdeck user, groups and roles; the console gets an expiring token without it ever being in
a URL; forged, replayed and name-stealing sign-ins are refused."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from api.wiring import Services
from core.config import Settings
from tests.browser.test_console import CHROMIUM_FLAGS
from tests.conftest import World, service_unavailable
from tests.support.postgres import free_port
from tests.support.server import running_server
from tests.support.threads import in_fresh_thread


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    """A real OIDC provider process; its issuer URL."""
    if importlib.util.find_spec("oidc_provider_mock") is None:
        service_unavailable("oidc-provider-mock is not installed (pip: oidc-provider-mock)")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "oidc_provider_mock", "-H", "127.0.0.1", "-p", str(port)]
        + ["--require-registration", "--require-nonce"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    issuer = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # wait for the process to serve its discovery document
        try:
            if httpx.get(f"{issuer}/.well-known/openid-configuration").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None, "the OIDC provider exited"
        assert time.monotonic() < deadline, "the OIDC provider did not start"
        time.sleep(0.05)
    try:
        yield issuer
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def shipdeck(
    world: World, provider: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Services]]:
    """A shipdeck server whose OIDC client is registered at the provider."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the provider speaks plain HTTP
    services = Services.build(
        Settings(database_url=str(world.services.engine.url)), inline_apply=True
    )
    try:
        with running_server(services) as address:
            client = httpx.post(
                f"{provider}/oauth2/clients",
                json={"redirect_uris": [f"http://{address}/api/v1/auth/oidc/callback"]},
            ).json()
            services.settings = services.settings.model_copy(
                update={
                    "oidc_issuer": provider,
                    "oidc_client_id": client["client_id"],
                    "oidc_client_secret": SecretStr(client["client_secret"]),
                    "oidc_group_roles": {"sre": "approver", "shop-devs": "requester@shop"},
                }
            )
            yield f"http://{address}", services
    finally:
        services.close()


def _user_at_provider(provider: str, sub: str, **claims: Any) -> None:
    assert httpx.put(f"{provider}/users/{sub}", json=claims).status_code == 204


def _sign_in(site: str, sub: str) -> tuple[httpx.Client, httpx.Response]:
    """Walk the browser's redirects; returns the browser and shipdeck's callback answer."""
    browser = httpx.Client(follow_redirects=False, timeout=10)
    start = browser.get(f"{site}/api/v1/auth/oidc/login")
    assert start.status_code == 302, start.text
    authorize = start.headers["location"]
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"]
    assert query["nonce"] and query["state"] and "code_verifier" not in query
    consent = browser.post(authorize, data={"sub": sub})
    assert consent.status_code == 302, consent.text
    callback = consent.headers["location"]
    assert callback.startswith(f"{site}/api/v1/auth/oidc/callback?")
    return browser, browser.get(callback)


def _audit(world: World, action: str) -> list[dict[str, Any]]:
    with world.services.engine.connect() as connection:
        rows = connection.execute(
            text("SELECT data FROM audit_events WHERE action = :a ORDER BY seq"), {"a": action}
        ).scalars()
        return [d if isinstance(d, dict) else json.loads(d) for d in rows]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_sign_in_maps_user_groups_and_roles(
    world: World, provider: str, shipdeck: tuple[str, Services]
) -> None:
    site, _ = shipdeck
    _user_at_provider(
        provider, "u-zoe-1", preferred_username="zoe", groups=["sre", "shop-devs", "made-up"]
    )
    browser, answer = _sign_in(site, "u-zoe-1")
    assert answer.status_code == 302 and answer.headers["location"] == "/"
    assert "token" not in answer.headers["location"]
    picked = browser.post(f"{site}/api/v1/auth/oidc/session")
    assert picked.status_code == 200, picked.text
    token = picked.json()["token"]
    me = httpx.get(f"{site}/api/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me == {"name": "zoe", "roles": {"*": "approver", "shop": "requester"}}
    # The hand-off works once only.
    assert browser.post(f"{site}/api/v1/auth/oidc/session").status_code == 401
    with world.services.engine.connect() as connection:
        groups = set(
            connection.execute(
                text(
                    "SELECT g.name FROM groups g JOIN group_members m ON m.group_id = g.id "
                    "JOIN users u ON u.id = m.user_id WHERE u.name = 'zoe'"
                )
            ).scalars()
        )
        expiry = (
            connection.execute(
                text(
                    "SELECT t.label FROM api_tokens t JOIN users u ON u.id = t.user_id "
                    "WHERE u.name = 'zoe' AND t.expires_at IS NOT NULL"
                )
            )
            .scalars()
            .all()
        )
    assert groups == {"sre"}  # a group shipdeck does not know is not invented
    assert expiry == ["oidc"]
    signed_in = _audit(world, "signed_in")
    assert signed_in[-1]["groups_added"] == ["sre"] and signed_in[-1]["subject"] == "u-zoe-1"
    assert any(e["label"] == "oidc" and e["user"] == "zoe" for e in _audit(world, "token_issued"))

    # Removed from the group at the provider: removed in shipdeck at the next sign-in.
    _user_at_provider(provider, "u-zoe-1", preferred_username="zoe", groups=[])
    _, again = _sign_in(site, "u-zoe-1")
    assert again.status_code == 302
    assert _audit(world, "signed_in")[-1]["groups_removed"] == ["sre"]


def test_forged_replayed_and_name_stealing_sign_ins_are_refused(
    world: World, provider: str, shipdeck: tuple[str, Services]
) -> None:
    site, _ = shipdeck
    _user_at_provider(provider, "u-yan", preferred_username="yan")
    browser = httpx.Client(follow_redirects=False, timeout=10)
    authorize = browser.get(f"{site}/api/v1/auth/oidc/login").headers["location"]
    callback = browser.post(authorize, data={"sub": "u-yan"}).headers["location"]
    # Another browser (no state cookie) cannot complete someone else's sign-in.
    assert httpx.get(callback).status_code == 401
    assert browser.get(callback).status_code == 302
    # A replayed callback (same state, same code) is refused.
    assert browser.get(callback).status_code == 401
    # A forged code with a valid-looking state: refused by the provider.
    forged = browser.get(f"{site}/api/v1/auth/oidc/login").headers["location"]
    state = parse_qs(urlsplit(forged).query)["state"][0]
    bad = browser.get(f"{site}/api/v1/auth/oidc/callback", params={"code": "x", "state": state})
    assert bad.status_code == 401
    # The provider says "alice": a local account, never taken over by a provider name.
    _user_at_provider(provider, "u-mallory", preferred_username="alice", groups=["sre"])
    _, stolen = _sign_in(site, "u-mallory")
    assert stolen.status_code == 403
    # Hostile claims: a 10,000-character emoji name is refused, not stored.
    _user_at_provider(provider, "u-emoji", preferred_username="🚀" * 10_000)
    _, emoji = _sign_in(site, "u-emoji")
    assert emoji.status_code == 403
    assert httpx.post(f"{site}/api/v1/auth/oidc/session").status_code == 401
    assert httpx.get(f"{site}/api/v1/auth/oidc/callback?error=access_denied").status_code == 401


def test_without_oidc_settings_it_is_off(world: World) -> None:
    with running_server(world.services) as address:
        assert httpx.get(f"http://{address}/api/v1/auth/config").json()["oidc"] is False
        login = httpx.get(f"http://{address}/api/v1/auth/oidc/login")
        assert login.status_code == 404


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_console_signs_in_through_the_provider(
    world: World, provider: str, shipdeck: tuple[str, Services]
) -> None:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        service_unavailable("Chromium is not installed (apt: chromium)")
    from playwright.sync_api import sync_playwright

    site, _ = shipdeck
    _user_at_provider(provider, "u-quinn", preferred_username="quinn", groups=["shop-devs"])
    urls: list[str] = []

    def drive() -> str:
        token = ""
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
            try:
                page = chromium.new_page()
                page.on("request", lambda r: urls.append(r.url))
                page.on("websocket", lambda ws: urls.append(ws.url))
                page.goto(site)
                page.get_by_role("link", name="Sign in with single sign-on").click()
                page.locator("input[name=sub]").fill("u-quinn")
                page.get_by_role("button", name="Authorize").click()
                page.get_by_text("live", exact=True).wait_for()
                assert page.locator("#who").inner_text() == "quinn"
                token = page.evaluate("sessionStorage.getItem('shipdeck.token')")
            finally:
                chromium.close()
        return str(token)

    token = in_fresh_thread(drive)
    assert token and token.startswith("sd_")
    assert not any(token in u for u in urls)

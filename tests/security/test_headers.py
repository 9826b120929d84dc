"""Browser hardening on every response, and an OpenAPI document that states the rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.routes.console import STATIC
from tests.conftest import World


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """Headers do not depend on the database."""
    return sqlite_url


PATHS = [
    ("get", "/", 200),
    ("get", "/static/app.js", 200),
    ("get", "/static/app.css", 200),
    ("get", "/docs", 200),
    ("get", "/static/swagger/swagger-ui-bundle.js", 200),
    ("get", "/openapi.json", 200),
    ("get", "/healthz", 200),
    ("get", "/api/v1/me", 401),
    ("get", "/api/v1/nope", 404),
    ("delete", "/api/v1/releases", 405),
]


def _policy(header: str) -> dict[str, str]:
    return dict(
        (part.strip().split(" ", 1) + [""])[:2] for part in header.split(";") if part.strip()
    )


@pytest.mark.parametrize(("method", "path", "status"), PATHS)
def test_every_response_carries_the_hardening_headers(
    client: TestClient, method: str, path: str, status: int
) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-frame-options"] == "DENY"
    policy = _policy(response.headers["content-security-policy"])
    assert policy["frame-ancestors"] == "'none'"
    assert policy["script-src"] == "'self'"  # no inline script, anywhere
    assert policy["object-src"] == "'none'"
    if not path.startswith(("/docs", "/static/swagger")):
        assert policy["style-src"] == "'self'"


def test_a_refused_oversized_body_is_hardened_too(client: TestClient, world: World) -> None:
    response = client.post(
        "/api/v1/releases",
        content=b"{" + b" " * (128 * 1024) + b"}",
        headers={"Authorization": f"Bearer {world.tokens['alice']}"},
    )
    assert response.status_code == 413
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_405_names_every_method_of_the_path(client: TestClient) -> None:
    response = client.delete("/api/v1/releases")
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}


def test_console_files_hold_no_inline_script_or_style() -> None:
    for page in ("index.html", "docs.html"):
        html = (STATIC / page).read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), page
        assert not re.search(r"\son[a-z]+\s*=", html), page
        assert "<style" not in html and "style=" not in html, page
        assert "http://" not in html and "https://" not in html, page  # nothing from a CDN
    script = (STATIC / "app.js").read_text()
    assert "style=" not in script
    assert not re.search(r"\son[a-z]+=", script)


def test_openapi_documents_errors_patterns_and_bodies(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert set(schemas["ErrorBody"]["properties"]) == {"error"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            answers = operation["responses"]
            success = next(code for code in answers if code.startswith("2"))
            content = answers[success]["content"]
            if "application/json" not in content:  # a download (the audit export): text
                assert all(c["schema"] == {"type": "string"} for c in content.values()), where
            else:
                body = content["application/json"]["schema"]
                assert body.get("$ref") or body.get("properties") or body.get("anyOf"), where
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "release_id":
                    forms = parameter["schema"].get("anyOf", [parameter["schema"]])
                    assert any("[Rr]" in form.get("pattern", "") for form in forms), where
            if path in ("/healthz", "/readyz"):
                continue
            takes_input = bool(operation.get("parameters") or operation.get("requestBody"))
            for code in ("401", "404", "422") if takes_input else ("401",):
                ref = answers[code]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorBody"), where


def test_docs_page_needs_nothing_from_outside() -> None:
    assert Path(STATIC / "docs.js").read_text().count("http") == 0

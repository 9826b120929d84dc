"""REST: auth, the error shape, bad input, idempotency and the tool doors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api

PREVIEW = {"project": "shop", "environment": "prod", "changes": {"web": {"image_tag": "1.5.0"}}}


def _error(response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]  # type: ignore[no-any-return]


def test_health_needs_no_token_everything_else_does(api: Api) -> None:
    assert api.get("/healthz", user=None).json() == {"status": "ok"}
    ready = api.get("/readyz", user=None)
    assert ready.status_code == 200
    assert ready.json()["runtimes"] == ["compose", "kubernetes", "sandbox"]
    for path in ("/api/v1/targets", "/api/v1/releases", "/api/v1/approvals", "/api/v1/tools"):
        response = api.get(path, user=None)
        assert response.status_code == 401
        assert _error(response)["code"] == "not_authenticated"
    bad = api.client.get("/api/v1/targets", headers={"Authorization": "Bearer sd_nope"})
    assert bad.status_code == 401 and "unknown" in _error(bad)["message"]


def test_openapi_docs_are_served(api: Api) -> None:
    spec = api.get("/openapi.json", user=None).json()
    assert "/api/v1/releases/{release_id}/apply" in spec["paths"]
    assert api.get("/docs", user=None).status_code == 200


def test_full_flow_over_rest_carries_lifecycle_state(api: Api) -> None:
    created = api.post("/api/v1/releases", json=PREVIEW)
    assert created.status_code == 201
    rid = created.json()["id"]
    assert created.json()["lifecycle_state"] == "previewed"
    assert api.post(f"/api/v1/releases/{rid}/submit").json()["lifecycle_state"] == (
        "pending_approval"
    )
    inbox = api.get("/api/v1/approvals", user="bob", params={"mine": "true"}).json()
    assert [(i["release_id"], i["lifecycle_state"]) for i in inbox["items"]] == [
        (rid, "pending_approval")
    ]
    approved = api.post(f"/api/v1/approvals/{rid}/approve", user="bob", json={"comment": "ok"})
    assert approved.json()["lifecycle_state"] == "approved"
    applying = api.post(f"/api/v1/releases/{rid}/apply")
    assert applying.status_code == 202
    assert applying.json()["lifecycle_state"] in ("applying", "applied")
    assert api.get(f"/api/v1/releases/{rid}").json()["lifecycle_state"] == "applied"
    timeline = api.get(f"/api/v1/releases/{rid}/timeline").json()
    assert timeline["lifecycle_state"] == "applied"
    assert [e["action"] for e in timeline["entries"] if e["kind"] == "audit"] == [
        "preview",
        "submit",
        "approve",
        "apply",
        "applied",
    ]
    assert any(e["kind"] == "progress" for e in timeline["entries"])
    listed = api.get("/api/v1/releases", params={"state": "applied"}).json()
    assert [r["lifecycle_state"] for r in listed["items"]] == ["applied"]
    status = api.get("/api/v1/targets/shop/prod").json()
    assert status["services"]["web"]["image"] == "shop/web:1.5.0" and status["simulated"]
    audit = api.get("/api/v1/audit", user="admin", params={"release_id": rid}).json()
    assert {e["channel"] for e in audit["items"]} == {"rest", "system"}
    assert api.get("/api/v1/audit/verify", user="admin").json()["ok"] is True


def test_illegal_transition_is_409_with_current_state(api: Api) -> None:
    rid = api.post("/api/v1/releases", json=PREVIEW).json()["id"]
    response = api.post(f"/api/v1/releases/{rid}/apply")
    assert response.status_code == 409
    error = _error(response)
    assert error["code"] == "illegal_transition"
    assert error["details"]["current_state"] == "previewed"


def test_self_approval_is_403(api: Api) -> None:
    rid = api.post("/api/v1/releases", user="bob", json=PREVIEW).json()["id"]
    api.post(f"/api/v1/releases/{rid}/submit", user="bob")
    response = api.post(f"/api/v1/approvals/{rid}/approve", user="bob")
    assert response.status_code == 403
    assert _error(response)["details"]["reason"] == "self_approval"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("get", "/api/v1/releases/R-999", None, 404, "not_found"),
        ("get", "/api/v1/releases/banana", None, 422, "invalid_input"),
        ("post", "/api/v1/releases/R-999/submit", None, 404, "not_found"),
        ("get", "/api/v1/targets/shop/qa", None, 404, "not_found"),
        ("get", "/api/v1/targets/nope/prod", None, 404, "not_found"),
        ("post", "/api/v1/releases", {**PREVIEW, "environment": "qa"}, 404, "not_found"),
        (
            "post",
            "/api/v1/releases",
            {**PREVIEW, "changes": {"web": {"replicas": "many"}}},
            422,
            "invalid_input",
        ),
        (
            "post",
            "/api/v1/releases",
            {**PREVIEW, "changes": {"web": {"replicas": -1}}},
            422,
            "invalid_input",
        ),
        (
            "post",
            "/api/v1/releases",
            {**PREVIEW, "changes": {"nope": {"replicas": 1}}},
            404,  # a service the project lacks is not found, like an unknown environment
            "not_found",
        ),
        ("post", "/api/v1/releases", {**PREVIEW, "changes": {}}, 422, "invalid_input"),
        ("post", "/api/v1/releases", {**PREVIEW, "extra": 1}, 422, "invalid_input"),
        ("post", "/api/v1/releases", [1, 2], 422, "invalid_input"),
        (
            "post",
            "/api/v1/releases",
            {**PREVIEW, "changes": {"web": {"image_tag": "a b"}}},
            422,
            "invalid_input",
        ),
        ("get", "/api/v1/approvals?risk=extreme", None, 422, "invalid_input"),
        ("get", "/api/v1/approvals?limit=0", None, 422, "invalid_input"),
        ("get", "/api/v1/releases?state=bogus", None, 422, "invalid_input"),
        ("get", "/api/v1/releases?requested_by=%F0%9F%9A%80", None, 422, "invalid_input"),
        ("get", "/api/v1/releases?requested_by=" + "x" * 10_000, None, 422, "invalid_input"),
        (
            "post",
            "/api/v1/approvals/batch",
            {"action": "nuke", "release_ids": ["R-1"]},
            422,
            "invalid_input",
        ),
        ("post", "/api/v1/tools/nope", {}, 404, "not_found"),
        ("post", "/api/v1/tools/get_release", {"release_id": 5.5}, 422, "invalid_input"),
        ("post", "/api/v1/tools/get_release", ["R-1"], 422, "invalid_input"),
        ("get", "/api/v1/nope", None, 404, "not_found"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_changes_nothing(
    api: Api, method: str, path: str, body: object, status: int, code: str
) -> None:
    kwargs = {"json": body} if body is not None else {}
    response = getattr(api, method)(path, **kwargs)
    assert response.status_code == status, response.text
    error = _error(response)
    assert error["code"] == code and error["message"]
    assert api.get("/api/v1/releases").json()["items"] == []


def test_malformed_json_is_400(api: Api) -> None:
    response = api.post(
        "/api/v1/releases", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert _error(response)["code"] == "malformed_json"


def test_oversized_body_is_413(api: Api) -> None:
    huge = {**PREVIEW, "changes": {"web": {"env": {"X": "y" * 100_000}}}}
    response = api.post("/api/v1/releases", json=huge)
    assert response.status_code == 413
    assert _error(response)["code"] == "too_large"
    chunks = (b"x" * 10_000 for _ in range(10))  # no Content-Length: streamed
    streamed = api.post(
        "/api/v1/releases", content=chunks, headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert api.get("/api/v1/releases").json()["items"] == []


def test_idempotency_key_replays_instead_of_acting_twice(api: Api) -> None:
    key = {"Idempotency-Key": "deploy-web-1"}
    first = api.post("/api/v1/releases", json=PREVIEW, headers=key)
    again = api.post("/api/v1/releases", json=PREVIEW, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(api.get("/api/v1/releases").json()["items"]) == 1
    other = api.post("/api/v1/releases", json={**PREVIEW, "environment": "dev"}, headers=key)
    assert other.status_code == 409 and "different request" in _error(other)["message"]
    # The same key from another user is another key.
    bobs = api.post("/api/v1/releases", user="bob", json=PREVIEW, headers=key)
    assert bobs.status_code == 201 and bobs.json()["id"] != first.json()["id"]
    rid = first.json()["id"]
    submit = {"Idempotency-Key": "submit-1"}
    assert api.post(f"/api/v1/releases/{rid}/submit", headers=submit).status_code == 200
    replay = api.post(f"/api/v1/releases/{rid}/submit", headers=submit)
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    # Without the key, a second submit is the illegal transition it is.
    assert api.post(f"/api/v1/releases/{rid}/submit").status_code == 409


def test_tool_door_lists_schemas_and_calls_the_same_functions(api: Api) -> None:
    tools = {t["name"]: t for t in api.get("/api/v1/tools").json()["tools"]}
    expected = {
        "list_targets",
        "target_status",
        "list_releases",
        "get_release",
        "release_timeline",
        "list_approvals",
        "diagnose_target",
        "verify_audit",
        "preview_release",
        "submit_release",
        "apply_release",
        "rollback_release",
        "cancel_release",
        "approve_release",
        "reject_release",
        "approve_releases",
        "reject_releases",
    }
    assert expected <= set(tools)
    assert tools["apply_release"]["mutating"] is True
    assert tools["list_approvals"]["mutating"] is False
    assert "changes" in tools["preview_release"]["input_schema"]["properties"]
    assert tools["preview_release"]["description"]
    via_tool = api.post("/api/v1/tools/preview_release", json=PREVIEW)
    assert via_tool.status_code == 200 and via_tool.json()["lifecycle_state"] == "previewed"
    rid = via_tool.json()["id"]
    via_route = api.get(f"/api/v1/releases/{rid}").json()
    via_get = api.post("/api/v1/tools/get_release", json={"release_id": rid}).json()
    assert via_get == via_route


def test_batch_route_decides_each_release(api: Api) -> None:
    ids = []
    for service in ("web", "api"):
        body = {**PREVIEW, "changes": {service: {"replicas": 2}}}
        rid = api.post("/api/v1/releases", json=body).json()["id"]
        api.post(f"/api/v1/releases/{rid}/submit")
        ids.append(rid)
    response = api.post(
        "/api/v1/approvals/batch",
        user="bob",
        json={"action": "approve", "release_ids": [*ids, "R-77"]},
    )
    items = response.json()["items"]
    assert [i["ok"] for i in items] == [True, True, False]
    assert items[2]["error"]["code"] == "not_found"


def test_channel_header_marks_pages_but_cannot_claim_chat(api: Api) -> None:
    page = api.post("/api/v1/releases", json=PREVIEW, headers={"X-Shipdeck-Channel": "page"})
    chat = api.post(
        "/api/v1/releases",
        json={**PREVIEW, "environment": "dev"},
        headers={"X-Shipdeck-Channel": "chat"},
    )
    assert page.json()["channel"] == "page"
    assert chat.json()["channel"] == "rest"


def test_request_id_is_echoed_and_audited(api: Api) -> None:
    response = api.post("/api/v1/releases", json=PREVIEW, headers={"X-Request-ID": "req-123"})
    assert response.headers["X-Request-ID"] == "req-123"
    events = api.get("/api/v1/audit", user="admin", params={"release_id": response.json()["id"]})
    assert events.json()["items"][0]["request_id"] == "req-123"


def test_me(api: Api) -> None:
    assert api.get("/api/v1/me", user="bob").json() == {
        "name": "bob",
        "roles": {"shop": "approver"},
    }


def test_releases_by_requester_over_rest(api: Api) -> None:
    """`requested_by=me` is the caller, on the server: others' newer releases do not hide it."""
    mine = api.post("/api/v1/releases", json=PREVIEW).json()["id"]
    for tag in ("1.6.0", "1.7.0"):
        body = {**PREVIEW, "environment": "dev", "changes": {"web": {"image_tag": tag}}}
        assert api.post("/api/v1/releases", user="bob", json=body).status_code == 201
    page = api.get("/api/v1/releases", params={"requested_by": "me", "limit": 1}).json()
    assert [r["id"] for r in page["items"]] == [mine] and page["next_before"] is None
    bobs = api.get("/api/v1/releases", params={"requested_by": "bob"}).json()["items"]
    assert [r["requested_by"] for r in bobs] == ["bob", "bob"]
    spec = api.get("/openapi.json", user=None).json()
    params = {p["name"] for p in spec["paths"]["/api/v1/releases"]["get"]["parameters"]}
    assert "requested_by" in params

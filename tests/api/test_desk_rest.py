"""Release desk over REST: typed 409s, allowed_actions, retry, freezes, promotion override."""

from __future__ import annotations

from datetime import datetime, timedelta

from core.db import utcnow
from tests.api.conftest import Api
from tests.support.calls import sql


def _approved_dev(api: Api, tag: str) -> str:
    made = api.post(
        "/api/v1/releases",
        json={"project": "shop", "environment": "dev", "changes": {"web": {"image_tag": tag}}},
    )
    assert made.status_code == 201, made.text
    rid = str(made.json()["id"])
    assert api.post(f"/api/v1/releases/{rid}/submit").json()["lifecycle_state"] == "approved"
    return rid


def test_freeze_over_rest_refuses_apply_with_409_then_lifts(api: Api) -> None:
    rid = _approved_dev(api, "1.6.0")
    until = (utcnow() + timedelta(hours=1)).isoformat()
    body = {"project": "shop", "environment": "dev", "until": until, "reason": "incident 42 🔥"}
    assert api.post("/api/v1/freezes", user="alice", json=body).status_code == 403
    assert api.post("/api/v1/freezes", user="carol", json={**body, "reason": ""}).status_code == 422
    assert (
        api.post("/api/v1/freezes", user="carol", json={**body, "until": "soon"}).status_code == 422
    )
    made = api.post("/api/v1/freezes", user="carol", json=body)
    assert made.status_code == 201, made.text
    freeze = made.json()
    assert freeze["active"] is True and freeze["created_by"] == "carol"
    refused = api.post(f"/api/v1/releases/{rid}/apply")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "frozen"
    assert "by carol: incident 42" in refused.json()["error"]["message"]
    listed = api.get("/api/v1/freezes?project=shop", user="victor").json()
    assert [f["id"] for f in listed["items"]] == [freeze["id"]]
    assert api.post(f"/api/v1/freezes/{freeze['id']}/lift", user="admin").json()["active"] is False
    assert api.post(f"/api/v1/releases/{rid}/apply").status_code == 202


def test_retry_and_allowed_actions_over_rest(api: Api) -> None:
    rid = _approved_dev(api, "1.6.0-broken")
    api.post(f"/api/v1/releases/{rid}/apply")
    failed = api.get(f"/api/v1/releases/{rid}").json()
    assert failed["lifecycle_state"] == "failed"
    assert failed["allowed_actions"] == ["rollback", "retry"]
    assert api.post(f"/api/v1/releases/{rid}/retry", user="victor").status_code == 403
    assert api.post("/api/v1/releases/R-999/retry").status_code == 404
    assert api.post("/api/v1/releases/%F0%9F%92%A5/retry").status_code in (404, 422)
    # The failed spec is live (sandbox keeps the broken image): restore it by hand first.
    sql(api.world, "UPDATE sandbox_services SET image='shop/web:1.4.1' WHERE service='web'")
    retried = api.post(f"/api/v1/releases/{rid}/retry")
    assert retried.status_code == 201, retried.text
    assert retried.json()["retry_of"] == rid
    assert retried.json()["allowed_actions"] == ["submit", "cancel", "repreview"]


def test_promote_over_rest(api: Api) -> None:
    rid = _approved_dev(api, "1.6.0")
    api.post(f"/api/v1/releases/{rid}/apply")
    body = {"project": "shop", "from_environment": "dev", "to_environment": "staging"}
    made = api.post("/api/v1/promotions", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["changes"] == {"web": {"image": "shop/web:1.6.0"}}
    assert api.post("/api/v1/promotions", user="victor", json=body).status_code == 403
    hostile = {**body, "services": ["💥" * 100]}
    assert api.post("/api/v1/promotions", json=hostile).status_code == 422
    assert api.post("/api/v1/promotions", json={**body, "extra": 1}).status_code == 422


def test_freezes_over_rest_take_a_span_or_a_local_time_in_a_zone(api: Api) -> None:
    day = (utcnow() + timedelta(days=5)).date().isoformat()
    local = {"project": "shop", "environment": "prod", "reason": "🧊 change freeze"}
    made = api.post(
        "/api/v1/freezes",
        user="carol",
        json={**local, "until": f"{day}T09:00", "timezone": "Asia/Tokyo"},
    )
    assert made.status_code == 201, made.text
    until = datetime.fromisoformat(made.json()["until"])
    assert until == datetime.fromisoformat(f"{day}T00:00+00:00")  # 09:00 in Tokyo is 00:00 UTC
    span = api.post("/api/v1/freezes", user="carol", json={**local, "duration_minutes": 90})
    assert span.status_code == 201
    both = {**local, "duration_minutes": 90, "until": f"{day}T09:00"}
    assert api.post("/api/v1/freezes", user="carol", json=both).status_code == 422
    assert api.post("/api/v1/freezes", user="carol", json=local).status_code == 422
    zone = {**local, "until": f"{day}T09:00", "timezone": "Mars/Olympus"}
    assert api.post("/api/v1/freezes", user="carol", json=zone).status_code == 422
    assert api.post("/api/v1/freezes/0/lift", user="carol").status_code == 422
    assert api.post("/api/v1/freezes/999999/lift", user="carol").status_code == 404
    lifted = api.post(f"/api/v1/freezes/{span.json()['id']}/lift", user="dave")
    assert lifted.status_code == 200 and lifted.json()["lifted_by"] == "dave"
    every = api.get("/api/v1/freezes?project=shop&active=false", user="victor").json()["items"]
    assert [f["active"] for f in every] == [False, True]

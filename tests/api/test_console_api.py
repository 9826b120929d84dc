"""REST behind the console's history search and audit page: query params, export, refusals."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from urllib.parse import quote

from core.audit.chain import keyring_of
from core.audit.service import checkpoint
from core.audit.verify import verify_lines
from core.db import utcnow
from core.identity.models import User
from core.identity.service import ensure_group_member
from tests.api.conftest import Api
from tests.conftest import World
from tests.support.calls import call, deploy


def _ids(api: Api, query: str, user: str = "alice") -> list[str]:
    response = api.get(f"/api/v1/releases?{query}", user=user)
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["items"]]


def test_release_search_over_rest(api: Api, world: World) -> None:
    web = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.6.0-rc1"}).id
    other = deploy(world, "alice", "shop", "dev", api={"image_tag": "2.0.1"}).id
    call(world, "alice", "cancel_release", release_id=other, reason="50% 🚀 rollout; a_b")
    assert _ids(api, "service=web") == [web]
    assert _ids(api, "text=RC1") == [web]
    assert _ids(api, f"text={quote('50%')}") == [other]
    assert _ids(api, f"text={quote('🚀')}") == [other]
    assert _ids(api, "text=a_b") == [other]
    assert _ids(api, "text=a%5Fb&service=api") == [other]
    assert _ids(api, f"text={quote(chr(39) + ' OR 1=1 --')}") == []
    soon = quote((utcnow() + timedelta(minutes=5)).isoformat())
    assert _ids(api, f"since={soon}") == []
    assert _ids(api, f"since={soon}&until={soon}") == []  # an empty range
    assert set(_ids(api, f"until={soon}")) == {web, other}
    for bad in (
        f"text={quote('x' * 9_999 + '🚀')}",
        "since=2026-01-01T00:00:00",  # no time zone
        "since=yesterday",
        "service=we%25",
        "since=0",  # not a timestamp
        "until=2026-01-01",
    ):
        response = api.get(f"/api/v1/releases?{bad}")
        assert response.status_code == 422, (bad, response.text)
        assert response.json()["error"]["code"] in ("validation_error", "invalid_input")
    # The same tool through the tool door: 10,000 emoji are refused, not searched.
    body = {"text": "🚀" * 10_000}
    assert api.post("/api/v1/tools/list_releases", json=body).status_code == 422


def test_audit_list_filters(api: Api, world: World) -> None:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.6.0"}).id
    call(world, "alice", "submit_release", release_id=release)
    call(world, "bob", "approve_release", release_id=release)
    deploy(world, "alice", "payment", "prod", gateway={"image_tag": "2.0"})

    def events(query: str, user: str = "admin") -> list[dict[str, object]]:
        response = api.get(f"/api/v1/audit?{query}", user=user)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    approvals = events("action=approve")
    assert [(e["actor"], e["release_id"]) for e in approvals] == [("bob", release)]
    assert {e["actor"] for e in events("actor=bob")} == {"bob"}
    assert {e["project"] for e in events("project=payment")} == {"payment"}
    assert {e["release_id"] for e in events(f"release_id={release}")} == {release}
    later = quote((utcnow() + timedelta(minutes=5)).isoformat())
    assert events(f"since={later}") == []
    assert len(events(f"until={later}&project=shop")) >= 3
    assert {e["project"] for e in events("limit=500", user="victor")} == {"shop"}
    assert api.get("/api/v1/audit?action=DROP%20TABLE", user="admin").status_code == 422
    assert api.get("/api/v1/audit?since=2026-01-01", user="admin").status_code == 422


def test_audit_export_streams_for_admins_and_auditors_only(api: Api, world: World) -> None:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.6.0"}).id
    call(world, "alice", "cancel_release", release_id=release, reason='a "quoted", 🚀 reason')
    with world.services.sessions() as session:
        cp = checkpoint(session)
        ring = keyring_of(session)
        carol = session.query(User).filter_by(name="carol").one()
        ensure_group_member(session, carol, "auditor", None)
        session.commit()

    response = api.get("/api/v1/audit/export?format=jsonl", user="admin")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in response.headers["content-disposition"]
    lines = response.text.splitlines()
    assert len(lines) >= cp.seq and verify_lines(lines, ring, checkpoint=cp).ok

    as_csv = api.get("/api/v1/audit/export?format=csv", user="carol")  # the auditor group
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert any('a \\"quoted\\", 🚀 reason' in r["data"] for r in rows)
    assert {"seq", "hash", "prev_hash", "release_id"} <= set(rows[0])

    later = quote((utcnow() + timedelta(minutes=5)).isoformat())
    assert api.get(f"/api/v1/audit/export?since={later}", user="admin").text == ""
    for user in ("alice", "bob", "victor", "dave"):  # dave is sre, not auditor
        refused = api.get("/api/v1/audit/export", user=user)
        assert refused.status_code == 403, user
        assert refused.json()["error"]["code"] == "permission_denied"
    assert api.get("/api/v1/audit/export", user=None).status_code == 401
    assert api.get("/api/v1/audit/export?format=xml", user="admin").status_code == 422
    # The export itself is on record (access log), with who asked.
    accessed = api.get("/api/v1/audit/export?format=jsonl", user="admin")
    assert accessed.status_code == 200

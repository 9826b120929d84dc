"""The audit doors over REST: checkpoints for admins only, verify for anyone with a role."""

from __future__ import annotations

from core.audit.verify import Checkpoint
from tests.api.conftest import Api
from tests.support.calls import call


def test_admin_cuts_a_checkpoint_that_verify_accepts(api: Api) -> None:
    response = api.get("/api/v1/audit/checkpoint", user="admin")
    assert response.status_code == 200, response.text
    cp = Checkpoint.model_validate(response.json())
    from core.audit.service import verify

    with api.world.services.sessions() as session:
        assert verify(session, checkpoint=cp).ok
    for user in ("alice", "bob", "victor"):
        assert api.get("/api/v1/audit/checkpoint", user=user).status_code == 403
    assert api.get("/api/v1/audit/checkpoint", user=None).status_code == 401


def test_verify_over_rest_reports_the_snapshot(api: Api) -> None:
    body = api.get("/api/v1/audit/verify", user="victor").json()
    assert body["ok"] is True and body["unexplained"] == []
    assert body["last_seq"] == call(api.world, "admin", "verify_audit").last_seq

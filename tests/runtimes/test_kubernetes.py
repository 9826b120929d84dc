"""The Kubernetes adapter over HTTP against an emulated API server (kmock), whole flow.

What kmock cannot do (dry run, generation, the Deployment controller) is emulated in
tests/support/kube.py the way the API server and the controller would do it.
"""

from __future__ import annotations

import json

import pytest

from core.errors import DriftDetected, InvalidInput, RuntimeFailure
from tests.runtimes.conftest import KubeTarget, wait_until
from tests.support.calls import call, deploy, sql

pytestmark = pytest.mark.kubernetes


def _approved(target: KubeTarget, **changes: dict[str, object]) -> str:
    release = deploy(target.world, "alice", "shop", "prod", **changes)
    call(target.world, "alice", "submit_release", release_id=release.id)
    call(target.world, "bob", "approve_release", release_id=release.id)
    return str(release.id)


def _state(target: KubeTarget, release_id: str) -> str:
    return str(call(target.world, "alice", "get_release", release_id=release_id).lifecycle_state)


def test_status_reads_deployments(kube_target: KubeTarget) -> None:
    status = call(kube_target.world, "alice", "target_status", project="shop", environment="prod")
    assert status.simulated is False
    worker = status.services["worker"]
    assert (worker.image, worker.replicas, worker.env, worker.health) == (
        "demo/worker:2.0.0",
        2,
        {"QUEUE": "jobs"},
        "healthy",
    )
    assert status.services["api"].health == "absent"


def test_preview_is_a_server_side_dry_run_that_changes_nothing(kube_target: KubeTarget) -> None:
    release = deploy(kube_target.world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    assert release.preview.diff["web"]["image"].model_dump() == {
        "before": "demo/web:1.4.1",
        "after": "demo/web:1.5.0",
    }
    patches = [r for r in kube_target.requests() if r.method == "PATCH"]
    assert len(patches) == 1
    assert patches[0].params.get("dryRun") == "All"
    assert patches[0].params.get("fieldManager") == "shipdeck"
    assert patches[0].headers.get("Content-Type", "").startswith("application/apply-patch+yaml")
    assert kube_target.image("web") == "demo/web:1.4.1"


def test_apply_is_server_side_apply_and_waits_for_the_rollout(kube_target: KubeTarget) -> None:
    release_id = _approved(kube_target, web={"image_tag": "1.5.0", "replicas": 3})
    call(kube_target.world, "alice", "apply_release", release_id=release_id)
    assert _state(kube_target, release_id) == "applied"
    assert kube_target.image("web") == "demo/web:1.5.0"
    deployment = kube_target.cluster.deployment(kube_target.namespace, "web")
    assert deployment["metadata"]["generation"] == 2
    assert deployment["status"]["availableReplicas"] == 3
    applies = [
        r for r in kube_target.requests() if r.method == "PATCH" and "dryRun" not in r.params
    ]
    # Never forced, and only the fields this release changes.
    assert len(applies) == 1 and applies[0].params.get("force") == "false"
    assert json.loads(applies[0].body)["spec"] == {
        "replicas": 3,
        "template": {"spec": {"containers": [{"name": "web", "image": "demo/web:1.5.0"}]}},
    }
    timeline = call(kube_target.world, "alice", "release_timeline", release_id=release_id)
    messages = [e.message for e in timeline.entries if e.kind == "progress"]
    assert messages[0] == "server-side apply of Deployment web: image, replicas"
    assert messages[-1] == "rollout complete"


def test_failed_rollout_ends_failed_with_condition_and_pod_events(kube_target: KubeTarget) -> None:
    release_id = _approved(kube_target, web={"image_tag": "1.6.0-broken"})
    call(kube_target.world, "alice", "apply_release", release_id=release_id)
    release = call(kube_target.world, "alice", "get_release", release_id=release_id)
    assert release.lifecycle_state == "failed"
    assert "ProgressDeadlineExceeded" in release.reason
    timeline = call(kube_target.world, "alice", "release_timeline", release_id=release_id)
    events = [e.message for e in timeline.entries if e.level == "event"]
    assert any(
        "BackOff" in line and "Back-off restarting failed container web" in line for line in events
    )


def test_rollback_reapplies_the_previous_revision(kube_target: KubeTarget) -> None:
    first = _approved(kube_target, web={"image_tag": "1.6.0-broken"})
    call(kube_target.world, "alice", "apply_release", release_id=first)
    assert _state(kube_target, first) == "failed"
    back = call(kube_target.world, "alice", "rollback_release", project="shop", environment="prod")
    assert back.preview.diff["web"]["image"].after == "demo/web:1.4.1"
    call(kube_target.world, "alice", "submit_release", release_id=back.id)
    call(kube_target.world, "bob", "approve_release", release_id=back.id)
    call(kube_target.world, "alice", "apply_release", release_id=back.id)
    assert _state(kube_target, back.id) == "applied"
    assert _state(kube_target, first) == "rolled_back"
    assert kube_target.image("web") == "demo/web:1.4.1"
    wait_until(
        lambda: (
            kube_target.cluster.deployment(kube_target.namespace, "web")["status"].get(
                "availableReplicas"
            )
            == 1
        )
    )


def test_hand_made_change_after_preview_is_drift(kube_target: KubeTarget) -> None:
    release_id = _approved(kube_target, worker={"env": {"QUEUE": "jobs2"}})
    kube_target.apps().patch_namespaced_deployment(
        "worker", kube_target.namespace, {"spec": {"replicas": 5}}
    )
    with pytest.raises(DriftDetected):
        call(kube_target.world, "alice", "apply_release", release_id=release_id)
    assert _state(kube_target, release_id) == "approved"


def test_unknown_deployment_is_refused(kube_target: KubeTarget) -> None:
    with pytest.raises(InvalidInput, match="no Deployment, StatefulSet or DaemonSet named api"):
        deploy(kube_target.world, "alice", "shop", "prod", api={"image_tag": "1"})
    assert call(kube_target.world, "alice", "list_releases").items == []


def test_unreachable_api_server_is_a_clear_error(kube_target: KubeTarget, tmp_path) -> None:
    dead = tmp_path / "dead.yaml"
    dead.write_text(
        kube_target.cluster.kubeconfig.read_text().replace(
            kube_target.cluster.url, "http://127.0.0.1:9"
        )
    )
    release_id = _approved(kube_target, web={"image_tag": "1.5.0"})
    sql(
        kube_target.world,
        "UPDATE targets SET connection = :c WHERE environment = 'prod'",
        c=f'{{"kubeconfig": "{dead}", "namespace": "{kube_target.namespace}"}}',
    )
    with pytest.raises(RuntimeFailure, match="unreachable"):
        call(kube_target.world, "alice", "apply_release", release_id=release_id)
    assert _state(kube_target, release_id) == "approved"
    with pytest.raises(RuntimeFailure, match="unreachable"):
        deploy(kube_target.world, "alice", "shop", "prod", web={"image_tag": "2"})


def test_diagnose_reports_conditions_and_events(kube_target: KubeTarget) -> None:
    release_id = _approved(kube_target, web={"image_tag": "2.0.0-broken"})
    call(kube_target.world, "alice", "apply_release", release_id=release_id)
    diagnosis = call(
        kube_target.world,
        "alice",
        "diagnose_target",
        project="shop",
        environment="prod",
        service="web",
    )
    web = diagnosis.services["web"]
    assert web.health == "unhealthy"
    assert any("ProgressDeadlineExceeded" in line for line in web.events)
    assert any("BackOff" in line for line in web.events)

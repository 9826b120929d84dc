"""The Kubernetes adapter held to how a real cluster behaves (issue 13, points 1-6), on kmock.

The emulator (tests/support/kube.py) plays the API server's and the controllers' parts the
way a cluster does: server-side apply with managedFields and conflicts, rollout status, pods
with per-container logs, events out of time order, a webhook refusing dry runs.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.errors import DriftDetected, InvalidInput
from tests.runtimes.conftest import KubeTarget, wait_until
from tests.support.calls import call, deploy
from tests.support.kube import (
    DAEMONSETS,
    DEPLOYMENTS,
    HPAS,
    STATEFULSETS,
    deployment_manifest,
    kubeconfig_for,
)

pytestmark = pytest.mark.kubernetes


def _approved(target: KubeTarget, **changes: dict[str, object]) -> str:
    release = deploy(target.world, "alice", "shop", "prod", **changes)
    call(target.world, "alice", "submit_release", release_id=release.id)
    call(target.world, "bob", "approve_release", release_id=release.id)
    return str(release.id)


def _ship(target: KubeTarget, **changes: dict[str, object]) -> str:
    release_id = _approved(target, **changes)
    call(target.world, "alice", "apply_release", release_id=release_id)
    return release_id


def _release(target: KubeTarget, release_id: str) -> object:
    return call(target.world, "alice", "get_release", release_id=release_id)


def _applies(target: KubeTarget) -> list[dict[str, Any]]:
    """Bodies of the real (not dry-run) server-side applies the API server received."""
    return [
        json.loads(r.body)
        for r in target.requests()
        if r.method == "PATCH"
        and "dryRun" not in r.params
        and "apply-patch" in r.headers.get("Content-Type", "")
    ]


def _observed(target: KubeTarget, name: str) -> bool:
    deployment = target.cluster.deployment(target.namespace, name)
    status = deployment.get("status") or {}
    return bool(status.get("observedGeneration") == deployment["metadata"]["generation"])


# ---------------------------------------------------------------- 1. rollout status


def test_surge_rollout_with_old_replicas_left_is_not_success(kube_target: KubeTarget) -> None:
    # replicas=2, updated=1, available=1 during a surge: the old pod still serves traffic.
    kube_target.apps().patch_namespaced_deployment(
        "web", kube_target.namespace, {"spec": {"progressDeadlineSeconds": 1}}
    )
    wait_until(lambda: _observed(kube_target, "web"))
    release_id = _ship(kube_target, web={"image_tag": "1.5.0-surge"})
    release = _release(kube_target, release_id)
    assert release.lifecycle_state == "failed"  # type: ignore[attr-defined]
    assert "old replicas pending termination" in release.reason  # type: ignore[attr-defined]
    # The wait followed progressDeadlineSeconds (1 s + grace), not the 10 s declared cap.
    assert "within 3s" in release.reason  # type: ignore[attr-defined]
    status = call(kube_target.world, "alice", "target_status", project="shop", environment="prod")
    assert status.services["web"].health == "starting"


def test_progress_deadline_exceeded_fails_with_the_controllers_reason(
    kube_target: KubeTarget,
) -> None:
    release_id = _ship(kube_target, worker={"image_tag": "2.1.0-broken"})
    release = _release(kube_target, release_id)
    assert release.lifecycle_state == "failed"  # type: ignore[attr-defined]
    assert release.reason.startswith("worker: ProgressDeadlineExceeded")  # type: ignore[attr-defined]


# ---------------------------------------------------------------- 2. which container


def test_sidecar_first_pod_without_a_service_named_container_is_refused(
    kube_target: KubeTarget,
) -> None:
    kube_target.create(
        deployment_manifest("api", "demo/api:1", sidecar="envoy", container_name="app")
    )
    with pytest.raises(InvalidInput, match=r"2 containers \(envoy, app\)"):
        deploy(kube_target.world, "alice", "shop", "prod", api={"image_tag": "2"})
    assert call(kube_target.world, "alice", "list_releases").items == []
    kube_target.connect(containers={"api": "app"})
    release_id = _ship(kube_target, api={"image_tag": "2"})
    assert _release(kube_target, release_id).lifecycle_state == "applied"  # type: ignore[attr-defined]
    containers = kube_target.cluster.deployment(kube_target.namespace, "api")["spec"]["template"][
        "spec"
    ]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [
        ("envoy", "demo/envoy:1"),
        ("app", "demo/api:2"),
    ]


def test_declared_container_that_does_not_exist_is_refused(kube_target: KubeTarget) -> None:
    kube_target.connect(containers={"web": "main"})
    with pytest.raises(InvalidInput, match="no container 'main' \\(containers: web\\)"):
        deploy(kube_target.world, "alice", "shop", "prod", web={"image_tag": "2"})


# ---------------------------------------------------------------- 3. field ownership


def test_only_changed_fields_are_applied_and_earlier_ones_are_kept(kube_target: KubeTarget) -> None:
    _ship(kube_target, web={"replicas": 3})
    assert _applies(kube_target)[-1]["spec"] == {"replicas": 3}
    _ship(kube_target, web={"image_tag": "1.5.0"})
    # Server-side apply drops a field its manager stops sending: replicas shipdeck set
    # before are sent again, or the Deployment would fall back to one replica.
    assert _applies(kube_target)[-1]["spec"] == {
        "replicas": 3,
        "template": {"spec": {"containers": [{"name": "web", "image": "demo/web:1.5.0"}]}},
    }
    deployment = kube_target.cluster.deployment(kube_target.namespace, "web")
    assert deployment["spec"]["replicas"] == 3
    managers = {e["manager"] for e in deployment["metadata"]["managedFields"]}
    assert managers == {"shipdeck"}


def test_replicas_change_on_an_autoscaled_workload_is_refused(kube_target: KubeTarget) -> None:
    kube_target.cluster.put(
        HPAS,
        kube_target.namespace,
        "worker-hpa",
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "worker-hpa", "namespace": kube_target.namespace},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker"},
                "minReplicas": 2,
                "maxReplicas": 10,
            },
        },
    )
    with pytest.raises(InvalidInput, match="HorizontalPodAutoscaler worker-hpa sets its replicas"):
        deploy(kube_target.world, "alice", "shop", "prod", worker={"replicas": 4})
    # An image change goes through and leaves replicas to the autoscaler.
    release_id = _ship(kube_target, worker={"image_tag": "2.1.0"})
    assert _release(kube_target, release_id).lifecycle_state == "applied"  # type: ignore[attr-defined]
    assert "replicas" not in _applies(kube_target)[-1]["spec"]


def test_field_manager_conflict_is_reported_in_preview_not_forced(kube_target: KubeTarget) -> None:
    worker = kube_target.cluster.deployment(kube_target.namespace, "worker")
    worker["metadata"]["managedFields"] = [
        {
            "manager": "helm",
            "operation": "Update",
            "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        }
    ]
    kube_target.cluster.put(DEPLOYMENTS, kube_target.namespace, "worker", worker)
    with pytest.raises(InvalidInput, match='conflict with "helm" using apps/v1: .spec.replicas'):
        deploy(kube_target.world, "alice", "shop", "prod", worker={"replicas": 4})
    assert kube_target.cluster.deployment(kube_target.namespace, "worker")["spec"]["replicas"] == 2
    # Fields helm does not own are ours to change, without force.
    release_id = _ship(kube_target, worker={"image_tag": "2.1.0"})
    assert _release(kube_target, release_id).lifecycle_state == "applied"  # type: ignore[attr-defined]
    # Taking helm's field over is an explicit, declared (and so audited) choice.
    kube_target.connect(force_conflicts=True)
    release_id = _ship(kube_target, worker={"replicas": 4})
    assert _release(kube_target, release_id).lifecycle_state == "applied"  # type: ignore[attr-defined]
    assert _applies(kube_target)[-1]["spec"]["replicas"] == 4
    assert [r.params.get("force") for r in kube_target.requests() if r.method == "PATCH"][
        -1
    ] == "true"


# ---------------------------------------------------------------- 4. logs and events


def test_diagnose_reads_each_pods_service_container_and_its_crashed_run(
    kube_target: KubeTarget,
) -> None:
    kube_target.create(deployment_manifest("api", "demo/api:1", 5, sidecar="envoy"))
    _ship(kube_target, api={"image_tag": "2-broken"})
    diagnosis = call(
        kube_target.world,
        "alice",
        "diagnose_target",
        project="shop",
        environment="prod",
        service="api",
    )
    api = diagnosis.services["api"]
    assert api.health == "unhealthy"
    pods = {line.split("/", 1)[0] for line in api.logs}
    assert len(pods) == 5  # every pod, not the first three
    assert not any("logs unavailable" in line for line in api.logs)
    assert any("(previous run): fatal: api cannot open queue" in line for line in api.logs)
    assert not any("envoy" in line.split(":", 1)[0] for line in api.logs)
    reasons = [line.split()[1] for line in api.events if line.split()[0] in ("Normal", "Warning")]
    assert reasons == ["Scheduled", "Pulled", "BackOff"]  # by time, not as listed
    log_requests = [r for r in kube_target.requests() if r.subresource == "log"]
    assert all(r.params.get("container") == "api" for r in log_requests)
    event_lists = [r for r in kube_target.requests() if r.url.path.endswith("/events")]
    assert event_lists and all("fieldSelector" in r.params for r in event_lists)


# ---------------------------------------------------------------- 5. webhooks refusing dry run


def test_dry_run_refused_by_a_webhook_falls_back_to_a_marked_client_side_diff(
    kube_target: KubeTarget,
) -> None:
    kube_target.apps().patch_namespaced_deployment(
        "web",
        kube_target.namespace,
        {"metadata": {"annotations": {"shipdeck.test/webhook": "refuse-dry-run"}}},
    )
    release = deploy(kube_target.world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    assert release.preview.diff["web"]["image"].after == "demo/web:1.5.0"
    marked = [r for r in release.preview.risk.reasons if "CLIENT-SIDE DIFF" in r]
    assert marked and "does not support dry run" in marked[0]
    assert kube_target.image("web") == "demo/web:1.4.1"
    assert _applies(kube_target) == []


# ---------------------------------------------------------------- 6. kinds and clients


def test_statefulset_is_previewed_applied_and_waited_for(kube_target: KubeTarget) -> None:
    kube_target.create(deployment_manifest("api", "demo/api:1", 2, kind="StatefulSet"))
    wait_until(
        lambda: (
            kube_target.cluster.get(STATEFULSETS, kube_target.namespace, "api")
            .get("status", {})
            .get("readyReplicas")
            == 2
        )
    )
    release_id = _ship(kube_target, api={"image_tag": "2", "replicas": 3})
    assert _release(kube_target, release_id).lifecycle_state == "applied"  # type: ignore[attr-defined]
    status = call(kube_target.world, "alice", "target_status", project="shop", environment="prod")
    assert (status.services["api"].image, status.services["api"].replicas) == ("demo/api:2", 3)
    # A StatefulSet has no progress deadline: the declared cap ends the wait.
    kube_target.connect(timeout_seconds=1)
    broken = _ship(kube_target, api={"image_tag": "3-broken"})
    reason = _release(kube_target, broken).reason  # type: ignore[attr-defined]
    assert "did not finish within 1s (0 of 3 pods ready)" in reason


def test_daemonset_takes_images_and_refuses_replicas(kube_target: KubeTarget) -> None:
    kube_target.create(deployment_manifest("api", "demo/agent:1", kind="DaemonSet"))
    wait_until(
        lambda: (
            kube_target.cluster.get(DAEMONSETS, kube_target.namespace, "api")
            .get("status", {})
            .get("numberAvailable")
            == 2
        )
    )
    with pytest.raises(InvalidInput, match="DaemonSet: it runs one pod per node"):
        # even when the count equals the pods it runs (one per node: 2 here)
        deploy(kube_target.world, "alice", "shop", "prod", api={"replicas": 2})
    release_id = _ship(kube_target, api={"image_tag": "2"})
    assert _release(kube_target, release_id).lifecycle_state == "applied"  # type: ignore[attr-defined]
    assert _applies(kube_target)[-1]["kind"] == "DaemonSet"


def test_one_client_per_target_runs_an_exec_credential_plugin_once(
    kube_target: KubeTarget, tmp_path: Path
) -> None:
    calls = tmp_path / "calls"
    plugin = tmp_path / "credential.py"
    plugin.write_text(
        "import json, sys\n"
        f"open({str(calls)!r}, 'a').write('x\\n')\n"
        "json.dump({'apiVersion': 'client.authentication.k8s.io/v1beta1',"
        " 'kind': 'ExecCredential', 'status': {'token': 'from-exec'}}, sys.stdout)\n"
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    exec_user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(plugin)],
            "interactiveMode": "Never",
        }
    }
    kubeconfig = tmp_path / "exec-kubeconfig.yaml"
    kubeconfig.write_text(yaml.safe_dump(kubeconfig_for(kube_target.cluster.url, exec_user)))
    kube_target.connect(kubeconfig=str(kubeconfig))
    for _ in range(3):
        call(kube_target.world, "alice", "target_status", project="shop", environment="prod")
    deploy(kube_target.world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    assert calls.read_text().count("x") == 1


# ---------------------------------------------------------------- drift (issue 9, hole 4)


def test_change_to_the_live_spec_outside_the_diffed_fields_is_drift(
    kube_target: KubeTarget,
) -> None:
    release_id = _approved(kube_target, web={"image_tag": "1.5.0"})
    # Someone adds a command to the container: image, replicas and env are unchanged.
    kube_target.apps().patch_namespaced_deployment(
        "web",
        kube_target.namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "web", "image": "demo/web:1.4.1", "command": ["/debug"]}
                        ]
                    }
                }
            }
        },
    )
    with pytest.raises(DriftDetected, match="re-preview"):
        call(kube_target.world, "alice", "apply_release", release_id=release_id)
    assert _release(kube_target, release_id).lifecycle_state == "approved"  # type: ignore[attr-defined]

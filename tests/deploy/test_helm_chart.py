"""The Helm chart, rendered by Helm's own engine and every object checked against the
Kubernetes API's models.

Rendering uses helm-python-sdk, which binds Helm v4's Go SDK as a library (no helm binary,
nothing downloaded): the same template engine, values schema and lint as `helm template`.
Each rendered object is then deserialized into the kubernetes client's model for its kind
(pydantic, unknown fields forbidden), and names are checked as the API server would.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from kubernetes import client as k8s
from pydantic import BaseModel

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "shipdeck"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")

MODELS: dict[tuple[str, str], type[BaseModel]] = {
    ("v1", "Secret"): k8s.V1Secret,
    ("v1", "Service"): k8s.V1Service,
    ("v1", "ServiceAccount"): k8s.V1ServiceAccount,
    ("apps/v1", "Deployment"): k8s.V1Deployment,
    ("batch/v1", "Job"): k8s.V1Job,
    ("policy/v1", "PodDisruptionBudget"): k8s.V1PodDisruptionBudget,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.V1Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.V1RoleBinding,
    ("networking.k8s.io/v1", "Ingress"): k8s.V1Ingress,
}

TEAM = {
    "replicaCount": 3,
    "publicUrl": "https://shipdeck.example.com",
    "database": {"url": "postgresql+psycopg://shipdeck:s3cret@pg.db:5432/shipdeck"},
    "audit": {"key": "k" * 48},
    "oidc": {
        "enabled": True,
        "issuerUrl": "https://sso.example.com/realms/eng",
        "clientId": "shipdeck",
        "clientSecret": "oidc-s3cret",
    },
    "rbac": {"targetNamespaces": ["shop", "payments"]},
    "env": {"SHIPDECK_PLANNER": "rules"},
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """`helm template` for an install into namespace `shipdeck`: every object, validated."""
    with helm.Chart.load(str(CHART)) as chart:
        files = chart.render(values, name="sd", namespace="shipdeck", is_install=True)
    objects = []
    for path, text in files.items():
        if not path.endswith(".yaml"):
            continue
        objects += [o for o in yaml.safe_load_all(text) if o]
    for obj in objects:
        validate(obj)
    return objects


def validate(obj: dict[str, Any]) -> None:
    """Deserialize into the API model of its kind (unknown fields fail) and check names."""
    key = (obj["apiVersion"], obj["kind"])
    assert key in MODELS, f"unexpected object {key}"
    MODELS[key].model_validate(obj)
    meta = obj["metadata"]
    assert DNS_SUBDOMAIN.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
    if "namespace" in meta:
        assert DNS_LABEL.match(meta["namespace"]), meta["namespace"]
    for value in meta.get("labels", {}).values():
        assert len(value) <= 63 and re.match(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$", value)


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, [o["metadata"]["name"] for o in found]
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), "duplicate env names"
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_lint_is_clean() -> None:
    report = helm.lint(str(CHART), TEAM, strict=True, namespace="shipdeck")
    assert report["errors"] == []
    assert all(m["severity"] <= 1 for m in report["messages"]), report["messages"]


def test_team_install_renders_valid_objects_with_probes_secrets_and_hooks() -> None:
    objects = render(TEAM)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["Deployment", "Job", "PodDisruptionBudget", "Secret", "Service", "ServiceAccount"]
        + ["Role", "RoleBinding"] * 2
    )

    deployment = one(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"][0] == "serve"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = env_of(container)
    assert env["SHIPDECK_MIGRATE_ON_START"] == "false"  # the hook migrates, replicas never race
    secret = one(objects, "Secret")
    for name, key in (
        ("SHIPDECK_DATABASE_URL", "database-url"),
        ("SHIPDECK_AUDIT_KEY", "audit-key"),
        ("SHIPDECK_OIDC_CLIENT_SECRET", "oidc-client-secret"),
    ):
        ref = env[name]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] == key
        assert key in secret["stringData"]
    # The names core's Settings read (SHIPDECK_OIDC_*, SHIPDECK_AUDIT_KEY).
    assert env["SHIPDECK_OIDC_ISSUER"] == "https://sso.example.com/realms/eng"
    assert env["SHIPDECK_OIDC_CLIENT_ID"] == "shipdeck"
    assert env["SHIPDECK_OIDC_REDIRECT_URL"] == (
        "https://shipdeck.example.com/api/v1/auth/oidc/callback"
    )
    assert env["SHIPDECK_PUBLIC_URL"] == "https://shipdeck.example.com"
    assert env["SHIPDECK_PLANNER"] == "rules"
    # No secret value is spelled out anywhere but in the Secret.
    rendered = yaml.safe_dump([o for o in objects if o["kind"] != "Secret"])
    assert "s3cret" not in rendered and "k" * 48 not in rendered

    job = one(objects, "Job")
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    secret_hooks = secret["metadata"]["annotations"]
    assert secret_hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    # The Secret the job reads exists before the job (hooks run in weight order).
    assert int(secret_hooks["helm.sh/hook-weight"]) < int(hooks["helm.sh/hook-weight"])
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["db", "upgrade"] and migrate["image"] == container["image"]
    assert env_of(migrate)["SHIPDECK_DATABASE_URL"] == env["SHIPDECK_DATABASE_URL"]
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False

    labels = spec["template"]["metadata"]["labels"]
    selectors = [
        spec["selector"]["matchLabels"],
        one(objects, "Service")["spec"]["selector"],
        one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert one(objects, "Service")["spec"]["ports"][0]["targetPort"] == "http"


def test_rbac_is_the_least_the_kubernetes_runtime_needs_in_each_target_namespace() -> None:
    objects = render(TEAM)
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account
    roles = [o for o in objects if o["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["payments", "shop"]
    granted = {
        (group, resource, verb)
        for rule in roles[0]["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    workloads = {
        ("apps", r, v)
        for r in ("deployments", "statefulsets", "daemonsets")
        for v in ("get", "list", "watch", "patch")
    }
    assert granted == workloads | {
        ("", "pods", "get"),
        ("", "pods", "list"),
        ("", "pods/log", "get"),
        ("", "events", "list"),
        ("autoscaling", "horizontalpodautoscalers", "get"),
        ("autoscaling", "horizontalpodautoscalers", "list"),
    }
    assert not any("*" in item for grant in granted for item in grant)
    assert not any(v in ("create", "delete", "update") for _, _, v in granted)
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": roles[0]["metadata"]["name"],
        }
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": "shipdeck"}
        ]


def test_ingress_routes_to_the_service_and_replicas_spread_over_nodes() -> None:
    hashed = {"nginx.ingress.kubernetes.io/upstream-hash-by": "$http_mcp_session_id"}
    values = {
        **TEAM,
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "host": "shipdeck.example.com",
            "tlsSecret": "shipdeck-tls",
            "annotations": hashed,
        },
    }
    objects = render(values)
    ingress = one(objects, "Ingress")
    assert ingress["metadata"]["annotations"] == hashed
    (rule,) = ingress["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {
        "name": one(objects, "Service")["metadata"]["name"],
        "port": {"name": "http"},
    }
    assert ingress["spec"]["tls"] == [
        {"hosts": ["shipdeck.example.com"], "secretName": "shipdeck-tls"}
    ]
    pod = one(objects, "Deployment")["spec"]["template"]
    (spread,) = pod["spec"]["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert not [o for o in render(TEAM) if o["kind"] == "Ingress"]


def test_existing_secrets_are_referenced_and_no_secret_is_rendered() -> None:
    values = {
        "database": {"existingSecret": "pg-credentials"},
        "audit": {"existingSecret": "audit-key"},
        "replicaCount": 1,
    }
    objects = render(values)
    assert not [o for o in objects if o["kind"] == "Secret"]
    assert not [o for o in objects if o["kind"] == "PodDisruptionBudget"]  # 1 replica: no PDB
    env = env_of(one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    assert env["SHIPDECK_DATABASE_URL"]["secretKeyRef"]["name"] == "pg-credentials"
    assert env["SHIPDECK_AUDIT_KEY"]["secretKeyRef"]["name"] == "audit-key"
    assert "SHIPDECK_OIDC_ISSUER" not in env
    assert "SHIPDECK_METRICS_TOKEN" not in env  # no secret given: /metrics stays off
    assert not [o for o in objects if o["kind"] in ("Role", "RoleBinding")]


def test_the_metrics_token_comes_from_its_own_secret_and_only_to_the_servers() -> None:
    objects = render({**TEAM, "metrics": {"existingSecret": "shipdeck-metrics"}})
    env = env_of(one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0])
    reference = env["SHIPDECK_METRICS_TOKEN"]["secretKeyRef"]
    assert reference == {"name": "shipdeck-metrics", "key": "metrics-token"}
    job = one(objects, "Job")["spec"]["template"]["spec"]["containers"][0]
    assert "SHIPDECK_METRICS_TOKEN" not in env_of(job)  # the migration needs no scrape token


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"audit": {"key": "k" * 40}}, "database.url"),
        ({"database": {"url": "sqlite:///shipdeck.db"}, "audit": {"key": "k" * 40}}, "pattern"),
        ({"database": {"url": "postgresql://x@db/x"}}, "audit.key"),
        ({"database": {"url": "postgresql://x@db/x"}, "audit": {"key": "short"}}, "pattern"),
        (
            {
                "database": {"url": "postgresql://x@db/x"},
                "audit": {"key": "k" * 40},
                "oidc": {"enabled": True},
            },
            "oidc.issuerUrl",
        ),
    ],
)
def test_refuses_what_a_team_install_cannot_run_on(values: dict[str, Any], says: str) -> None:
    with pytest.raises(helm.HelmError) as refused:
        render(values)
    assert says in str(refused.value)


@pytest.mark.parametrize(
    "hostile",
    [
        {"rbac": {"targetNamespaces": ["🚀-prod"]}},
        {"rbac": {"targetNamespaces": ["a" * 10_000]}},
        {"rbac": {"targetNamespaces": "shop"}},
        {"replicaCount": "3"},
        {"replicaCount": 0},
        {"env": {"SHIPDECK_DATABASE_URL": "sqlite:///x.db"}},
        {"env": {"PATH": "/tmp"}},
        {"env": {"SHIPDECK_METRICS_TOKEN": "k" * 32}},  # the chart's own, from a Secret
        {"metrics": {"existingSecret": "🚀" * 2_500}},
        {"metrics": {"token": "k" * 32}},
        {"publicUrl": "javascript:alert(1)"},
        {"image": {"repository": "x", "tag": "1.0 && rm -rf /"}},
    ],
)
def test_values_schema_refuses_hostile_input(hostile: dict[str, Any]) -> None:
    values = {**TEAM, **hostile}
    with pytest.raises(helm.HelmError) as refused:
        render(values)
    assert "schema" in str(refused.value).lower()

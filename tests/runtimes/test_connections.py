"""Each runtime adapter owns its connection model; a declaration's targets are a union built
from the registered adapters, discriminated by `runtime` (issue 9, reshape)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from core.errors import InvalidInput
from core.targets.schemas import COMMON_TARGET_FIELDS, declaration_model
from core.targets.service import parse_declaration
from runtimes.base import DeclaredPath, is_simulated, known_adapters
from runtimes.compose import ComposeAdapter, ComposeConnection
from runtimes.kubernetes import KubeConnection, KubernetesAdapter
from runtimes.registry import RuntimeRegistry
from runtimes.sandbox import SandboxAdapter, SandboxConnection


def _declare(target: str, runtimes: RuntimeRegistry | None = None) -> object:
    text = f"projects:\n  - name: shop\n    services: [web]\n    targets:\n      - {target}\n"
    return parse_declaration(text, runtimes)


def test_each_adapter_owns_its_connection_model() -> None:
    assert ComposeAdapter.connection_model is ComposeConnection
    assert KubernetesAdapter.connection_model is KubeConnection
    assert SandboxAdapter.connection_model is SandboxConnection
    for model in (ComposeConnection, KubeConnection, SandboxConnection):
        assert not COMMON_TARGET_FIELDS & set(model.model_fields)
    paths = {
        name
        for model in (ComposeConnection, KubeConnection, SandboxConnection)
        for name, info in model.model_fields.items()
        if any(isinstance(m, DeclaredPath) for m in info.metadata)
    }
    assert paths == {"compose_files", "kubeconfig"}
    assert {n: a.simulated for n, a in known_adapters().items()} == {
        "compose": False,
        "kubernetes": False,
        "sandbox": True,
    }
    assert is_simulated("sandbox") and not is_simulated("compose") and not is_simulated("nomad")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("{environment: dev, runtime: sandbox, namespace: shop}", "sandbox.namespace: Extra"),
        ("{environment: dev, runtime: compose, compose_files: [a.yaml], namespace: x}", "Extra"),
        ("{environment: dev, runtime: kubernetes, namespace: s, delay_seconds: 1}", "Extra"),
        ("{environment: dev, runtime: compose}", "a compose target needs compose_files"),
        ("{environment: dev, runtime: kubernetes}", "a kubernetes target needs a namespace"),
        ("{environment: dev, runtime: nomad}", "'compose', 'kubernetes', 'sandbox'"),
        ("{environment: dev, runtime: kubernetes, namespace: s, kinds: {web: Job}}", "kinds.web"),
        ("{environment: dev, runtime: sandbox, delay_seconds: 3600}", "delay_seconds"),
        ("{environment: dev, runtime: ['🚀' ]}", "runtime"),
    ],
)
def test_a_target_is_validated_by_its_runtimes_own_model(target: str, message: str) -> None:
    with pytest.raises(InvalidInput, match="the declaration is invalid") as refused:
        _declare(target)
    assert message in str(refused.value)


def test_the_union_is_built_from_the_registry_given(tmp_path: Path) -> None:
    only_sandbox = RuntimeRegistry(
        {"sandbox": SandboxAdapter(create_engine(f"sqlite:///{tmp_path / 'x.db'}"))}
    )
    with pytest.raises(InvalidInput, match="runtime: Input should be 'sandbox'"):
        _declare("{environment: dev, runtime: compose, compose_files: [a.yaml]}", only_sandbox)
    _declare("{environment: dev, runtime: sandbox, images: {web: demo/web:1}}", only_sandbox)
    assert only_sandbox.connection_models() == {"sandbox": SandboxConnection}
    assert only_sandbox.simulated("sandbox") and not only_sandbox.simulated("compose")
    models = {name: a.connection_model for name, a in known_adapters().items()}
    assert declaration_model(models) is declaration_model()  # built once per set of adapters


def test_a_stored_connection_is_what_the_model_validated(tmp_path: Path) -> None:
    declaration = _declare(
        "{environment: prod, runtime: kubernetes, namespace: shop, containers: {web: app}}"
    )
    target = declaration.projects[0].targets[0]  # type: ignore[attr-defined]
    assert target.connection(tmp_path) == {"namespace": "shop", "containers": {"web": "app"}}

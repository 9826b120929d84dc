"""A declaration's compose files and kubeconfigs stay in its folder (or an allowed root), and
no runtime error shows a caller what a file holds (issue 10)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from api.wiring import Services
from core.errors import InvalidInput
from core.permissions import SYSTEM
from core.targets.models import Target
from core.targets.service import load_declaration, parse_declaration
from tests.conftest import World, _services_for, _wipe, build_world
from tests.runtimes.conftest import KubeTarget
from tests.support.calls import call, deploy

SECRET = "root:$6$TOPSECRET-hash:19000:0:99999:7:::"


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    services: Services = _services_for(sqlite_url)
    _wipe(services)
    yield build_world(services)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """A declaration folder, and a secret file next to (outside) it."""
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "compose.yaml").write_text(yaml.safe_dump({"services": {"web": {"image": "a"}}}))
    outside = tmp_path / "secret"
    outside.write_text(SECRET + "\n")
    (folder / "link.yaml").symlink_to(outside)
    return folder, outside


def _load(world: World, folder: Path, field: str, value: str, **kwargs: object) -> None:
    if field == "compose_files":
        connection = f"compose_files: [{value!r}]\n        compose_project: p"
        runtime = "compose"
    else:
        connection = f"kubeconfig: {value!r}\n        namespace: shop"
        runtime = "kubernetes"
    text = f"""
projects:
  - name: vault
    services: [web]
    targets:
      - environment: staging
        runtime: {runtime}
        {connection}
"""
    with world.services.sessions() as session:
        load_declaration(
            session,
            actor=SYSTEM,
            declaration=parse_declaration(text),
            base_dir=folder,
            **kwargs,  # type: ignore[arg-type]
        )


def _targets(world: World) -> int:
    with world.services.sessions() as session:
        return session.query(Target).count()


@pytest.mark.parametrize("field", ["compose_files", "kubeconfig"])
@pytest.mark.parametrize(
    "value", ["/etc/shadow", "../secret", "link.yaml", "~/.ssh/id_rsa", "/" + "x" * 10_000 + "🚀"]
)
def test_paths_outside_the_declarations_folder_are_refused_at_load(
    world: World, layout: tuple[Path, Path], field: str, value: str
) -> None:
    folder, _ = layout
    before = _targets(world)
    with pytest.raises(InvalidInput) as refused:
        _load(world, folder, field, value)
    message = str(refused.value)
    assert f"targets.staging.{field}" in message
    assert "outside the declaration's folder" in message or "cannot be resolved" in message
    assert "TOPSECRET" not in message and len(message) < 600
    assert _targets(world) == before  # nothing of the file was loaded


def test_an_allowed_root_admits_files_outside_the_folder(
    world: World, layout: tuple[Path, Path]
) -> None:
    folder, outside = layout
    _load(world, folder, "kubeconfig", str(outside), allowed_roots=[outside.parent])
    _load(world, folder, "compose_files", "compose.yaml", allowed_roots=[])
    with world.services.sessions() as session:
        target = session.query(Target).filter(Target.runtime == "compose").one()
        assert target.connection["compose_files"] == [str(folder / "compose.yaml")]


@pytest.mark.kubernetes
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"{SECRET}\n  - [unbalanced\n", "is not valid YAML"),
        (f"apiVersion: v1\nkind: Config\ncurrent-context: '{SECRET}'\n", "not a usable kubeconfig"),
        ("- TOPSECRET\n- list\n", "kubeconfig"),
        (None, "does not exist"),
    ],
    ids=["not-yaml", "missing-context", "not-a-mapping", "missing"],
)
def test_a_bad_kubeconfig_is_a_clear_refusal_that_shows_none_of_it(
    kube_target: KubeTarget, tmp_path: Path, content: str | None, expected: str
) -> None:
    bad = tmp_path / "bad-kubeconfig.yaml"
    if content is not None:
        bad.write_text(content)
    kube_target.connect(kubeconfig=str(bad))
    attempts: list[Callable[[], object]] = [
        lambda: call(
            kube_target.world, "alice", "target_status", project="shop", environment="prod"
        ),
        lambda: deploy(kube_target.world, "alice", "shop", "prod", web={"image_tag": "2"}),
    ]
    for attempt in attempts:
        # InvalidInput is the 422 of REST: the caller's declaration is wrong, not the server.
        with pytest.raises(InvalidInput) as refused:
            attempt()
        assert expected in str(refused.value)
        assert "TOPSECRET" not in str(refused.value)

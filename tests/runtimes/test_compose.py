"""The Compose adapter against a real Docker engine, through the whole release flow."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from core.errors import DriftDetected, InvalidInput, RuntimeFailure
from core.targets.service import get_target, target_ref
from runtimes.base import Diagnosis, ServiceChange
from tests.runtimes.conftest import COMPOSE, ComposeTarget, wait_until
from tests.support.calls import call, deploy, sql

pytestmark = pytest.mark.docker


def _ship(target: ComposeTarget, **changes: dict[str, object]) -> str:
    """Preview, submit (staging needs no approval) and apply; returns the release id."""
    release = deploy(target.world, "alice", "shop", "staging", **changes)
    call(target.world, "alice", "submit_release", release_id=release.id)
    call(target.world, "alice", "apply_release", release_id=release.id)
    return str(release.id)


def _state(target: ComposeTarget, release_id: str) -> str:
    return str(call(target.world, "alice", "get_release", release_id=release_id).lifecycle_state)


def test_preview_diffs_desired_spec_against_running_containers(
    compose_target: ComposeTarget,
) -> None:
    status = call(
        compose_target.world, "alice", "target_status", project="shop", environment="staging"
    )
    assert status.simulated is False
    assert status.services["web"].image == "demo/web:1"
    assert (status.services["web"].health, status.services["web"].replicas) == ("healthy", 1)
    assert status.services["worker"].env == {"QUEUE": "jobs"}
    release = deploy(
        compose_target.world,
        "alice",
        "shop",
        "staging",
        web={"image_tag": "2"},
        worker={"replicas": 2, "env": {"QUEUE": "jobs2"}},
    )
    diff = {
        s: {f: (c.before, c.after) for f, c in d.items()} for s, d in release.preview.diff.items()
    }
    assert diff == {
        "web": {"image": ("demo/web:1", "demo/web:2")},
        "worker": {"replicas": (1, 2), "env.QUEUE": ("jobs", "jobs2")},
    }
    assert compose_target.running() == {"web": ["demo/web:1"], "worker": ["demo/worker:1"]}


def test_apply_changes_the_running_image_and_scale(compose_target: ComposeTarget) -> None:
    release_id = _ship(compose_target, web={"image_tag": "2"}, worker={"replicas": 2})
    assert _state(compose_target, release_id) == "applied"
    assert compose_target.running() == {
        "web": ["demo/web:2"],
        "worker": ["demo/worker:1", "demo/worker:1"],
    }
    timeline = call(compose_target.world, "alice", "release_timeline", release_id=release_id)
    messages = [e.message for e in timeline.entries if e.kind == "progress"]
    assert "compose up: demo/web:2 x1" in messages
    assert "1/1 containers healthy" in messages and "2/2 containers healthy" in messages


def test_unhealthy_image_fails_with_the_containers_last_logs(compose_target: ComposeTarget) -> None:
    release_id = _ship(compose_target, web={"image_tag": "3-unhealthy"})
    release = call(compose_target.world, "alice", "get_release", release_id=release_id)
    assert release.lifecycle_state == "failed"
    assert "turned unhealthy" in release.reason
    timeline = call(compose_target.world, "alice", "release_timeline", release_id=release_id)
    logs = [e.message for e in timeline.entries if e.level == "log"]
    assert any("/ready never appears" in line for line in logs)


def test_crashing_container_fails_with_its_output(compose_target: ComposeTarget) -> None:
    release_id = _ship(compose_target, worker={"image_tag": "crash"})
    release = call(compose_target.world, "alice", "get_release", release_id=release_id)
    assert release.lifecycle_state == "failed"
    assert "exited with code 3" in release.reason or "restarting" in release.reason
    timeline = call(compose_target.world, "alice", "release_timeline", release_id=release_id)
    assert any("boom: cannot open queue" in (e.message or "") for e in timeline.entries)


def test_rollback_restores_the_previous_image(compose_target: ComposeTarget) -> None:
    first = _ship(compose_target, web={"image_tag": "2"})
    assert compose_target.running()["web"] == ["demo/web:2"]
    back = call(
        compose_target.world, "alice", "rollback_release", project="shop", environment="staging"
    )
    assert back.preview.diff["web"]["image"].after == "demo/web:1"
    call(compose_target.world, "alice", "submit_release", release_id=back.id)
    call(compose_target.world, "alice", "apply_release", release_id=back.id)
    assert _state(compose_target, back.id) == "applied"
    assert _state(compose_target, first) == "rolled_back"
    assert compose_target.running()["web"] == ["demo/web:1"]


def test_rollback_after_a_failed_release(compose_target: ComposeTarget) -> None:
    failed = _ship(compose_target, worker={"image_tag": "crash"})
    assert _state(compose_target, failed) == "failed"
    back = call(
        compose_target.world, "alice", "rollback_release", project="shop", environment="staging"
    )
    call(compose_target.world, "alice", "submit_release", release_id=back.id)
    call(compose_target.world, "alice", "apply_release", release_id=back.id)
    assert _state(compose_target, back.id) == "applied"
    assert compose_target.running()["worker"] == ["demo/worker:1"]


def test_hand_made_change_after_preview_is_drift(compose_target: ComposeTarget) -> None:
    release = deploy(compose_target.world, "alice", "shop", "staging", web={"image_tag": "2"})
    call(compose_target.world, "alice", "submit_release", release_id=release.id)
    # Someone scales web by hand, outside shipdeck.
    compose_target.client().compose.up(
        services=["web"], detach=True, scales={"web": 2}, wait=True, wait_timeout=30, quiet=True
    )
    with pytest.raises(DriftDetected, match="re-preview"):
        call(compose_target.world, "alice", "apply_release", release_id=release.id)
    assert _state(compose_target, release.id) == "approved"
    assert compose_target.running()["web"] == ["demo/web:1", "demo/web:1"]
    again = call(compose_target.world, "alice", "repreview_release", release_id=release.id)
    assert again.preview.desired["web"].replicas == 2


@pytest.mark.parametrize(
    "edit",
    [{"command": ["sh", "-c", "echo edited; exec sleep 3600"]}, {"environment": {"DEBUG": "1"}}],
    ids=["command", "environment"],
)
def test_compose_file_edited_after_approval_is_drift(
    compose_target: ComposeTarget, edit: dict[str, object]
) -> None:
    # Nothing running changed, but `compose up` would now start what nobody reviewed.
    release = deploy(compose_target.world, "alice", "shop", "staging", web={"image_tag": "2"})
    call(compose_target.world, "alice", "submit_release", release_id=release.id)
    edited = copy.deepcopy(COMPOSE)
    edited["services"]["web"].update(edit)
    compose_target.file.write_text(yaml.safe_dump(edited))
    with pytest.raises(DriftDetected, match="re-preview"):
        call(compose_target.world, "alice", "apply_release", release_id=release.id)
    assert _state(compose_target, release.id) == "approved"
    assert compose_target.running() == {"web": ["demo/web:1"], "worker": ["demo/worker:1"]}
    again = call(compose_target.world, "alice", "repreview_release", release_id=release.id)
    assert again.preview.base_fingerprint != release.preview.base_fingerprint


# Files `compose config` reads besides the compose files: (name, first text, web's entry, edit).
INDIRECT: dict[str, tuple[str, str, dict[str, Any], str]] = {
    "dotenv": (".env", "WEB_MODE=a\n", {"environment": {"MODE": "${WEB_MODE}"}}, "WEB_MODE=b\n"),
    "env_file": ("web.env", "MODE=a\n", {"env_file": ["web.env"]}, "MODE=b\n"),
    "extends": (
        "base.yaml",
        yaml.safe_dump({"services": {"base": {"environment": {"MODE": "a"}}}}),
        {"extends": {"file": "base.yaml", "service": "base"}},
        yaml.safe_dump({"services": {"base": {"environment": {"MODE": "b"}}}}),
    ),
}


@pytest.mark.parametrize("kind", [*INDIRECT, "include"])
def test_file_the_compose_files_read_edited_after_approval_is_drift(
    compose_target: ComposeTarget, kind: str
) -> None:
    # The rendered config is cached between calls; an edit of any file it was rendered from
    # must still be seen, or `compose up` would start what nobody reviewed.
    files: dict[str, Any] = copy.deepcopy(COMPOSE)
    if kind == "include":
        web = files["services"].pop("web")
        files["include"] = ["web.yaml"]
        name, edit = "web.yaml", {"services": {"web": {**web, "environment": {"MODE": "b"}}}}
        (compose_target.directory / name).write_text(yaml.safe_dump({"services": {"web": web}}))
        edited = yaml.safe_dump(edit)
    else:
        name, first, entry, edited = INDIRECT[kind]
        (compose_target.directory / name).write_text(first)
        files["services"]["web"].update(entry)
    compose_target.file.write_text(yaml.safe_dump(files))
    release = deploy(compose_target.world, "alice", "shop", "staging", web={"image_tag": "2"})
    call(compose_target.world, "alice", "submit_release", release_id=release.id)
    (compose_target.directory / name).write_text(edited)
    with pytest.raises(DriftDetected, match="re-preview"):
        call(compose_target.world, "alice", "apply_release", release_id=release.id)
    assert _state(compose_target, release.id) == "approved"


def test_service_missing_from_compose_files_is_refused(compose_target: ComposeTarget) -> None:
    with pytest.raises(InvalidInput, match="define no service 'api'"):
        deploy(compose_target.world, "alice", "shop", "staging", api={"image_tag": "2"})
    assert call(compose_target.world, "alice", "list_releases").items == []


def test_compose_file_that_does_not_parse_is_refused(compose_target: ComposeTarget) -> None:
    compose_target.file.write_text("services:\n  web: [not, a, mapping\n")
    with pytest.raises(InvalidInput, match="does not parse"):
        deploy(compose_target.world, "alice", "shop", "staging", web={"image_tag": "2"})
    assert call(compose_target.world, "alice", "list_releases").items == []


def test_compose_errors_never_show_what_the_file_holds(compose_target: ComposeTarget) -> None:
    # What `compose config` says about a file that is not a compose file quotes its lines.
    compose_target.file.write_text("root:$6$TOPSECRET-hash:19000:0:99999:7:::\n")
    attempts: list[Callable[[], object]] = [
        lambda: deploy(compose_target.world, "alice", "shop", "staging", web={"image_tag": "2"}),
        lambda: call(
            compose_target.world, "alice", "target_status", project="shop", environment="staging"
        ),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidInput, match="does not parse") as refused:
            attempt()
        assert "TOPSECRET" not in str(refused.value) and "additional properties" in str(
            refused.value
        )


def test_unreachable_docker_host_is_a_clear_error_and_changes_nothing(
    compose_target: ComposeTarget,
) -> None:
    release = deploy(compose_target.world, "alice", "shop", "staging", web={"image_tag": "2"})
    call(compose_target.world, "alice", "submit_release", release_id=release.id)
    sql(
        compose_target.world,
        "UPDATE targets SET connection = :c WHERE environment = 'staging'",
        c=f'{{"compose_files": ["{compose_target.file}"], "compose_project": '
        f'"{compose_target.project}", "docker_host": "tcp://127.0.0.1:9"}}',
    )
    with pytest.raises(RuntimeFailure, match="unreachable"):
        call(compose_target.world, "alice", "apply_release", release_id=release.id)
    assert _state(compose_target, release.id) == "approved"
    with pytest.raises(RuntimeFailure, match="unreachable"):
        deploy(compose_target.world, "alice", "shop", "staging", web={"image_tag": "2"})


def test_diagnose_shows_logs_and_container_states(compose_target: ComposeTarget) -> None:
    # `up --wait` returns once the container runs; its first line may come later on a busy
    # machine, so wait for that event (the line in the logs) rather than assume it.
    seen: list[Diagnosis] = []

    def logged() -> bool:
        diagnosis = call(
            compose_target.world, "alice", "diagnose_target", project="shop", environment="staging"
        )
        seen.append(diagnosis)
        return any("web 1 up" in line for line in diagnosis.services["web"].logs)

    wait_until(logged, timeout=20)
    diagnosis = seen[-1]
    assert diagnosis.simulated is False
    assert "running" in diagnosis.services["worker"].events[0]


def test_engine_gone_mid_rollout_fails_the_release_with_a_reason(
    compose_target: ComposeTarget,
) -> None:
    # The plan was made against the engine; the apply finds none: not ok, with a reason and
    # an error line for the timeline (the runner turns that into `failed`).
    adapter = compose_target.world.services.runtimes.get("compose")
    with compose_target.world.services.sessions() as session:
        ref = target_ref(get_target(session, "shop", "staging"))
    plan = adapter.plan(ref, {"web": ServiceChange(image_tag="2")})
    gone = ref.model_copy(
        update={"connection": {**ref.connection, "docker_host": "tcp://127.0.0.1:9"}}
    )
    lines: list[tuple[str | None, str, str]] = []
    result = adapter.apply(plan.model_copy(update={"target": gone}), lambda *a: lines.append(a))
    assert result.ok is False and "compose up failed" in (result.reason or "")
    assert lines[-1][1] == "error"
    assert compose_target.running() == {"web": ["demo/web:1"], "worker": ["demo/worker:1"]}

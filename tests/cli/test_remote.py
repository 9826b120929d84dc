"""The terminal client (`shipdeck releases|approvals|targets`), a real process against a server."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import SHIPDECK
from tests.conftest import World
from tests.support.calls import call, deploy
from tests.support.server import running_server

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def server(world: World) -> Iterator[str]:
    with running_server(world.services) as address:
        yield f"http://{address}"


def shipdeck(
    *args: str, url: str | None, token: str | None, home: Path
) -> subprocess.CompletedProcess[str]:
    assert SHIPDECK
    env = {k: v for k, v in os.environ.items() if k not in ("SHIPDECK_URL", "SHIPDECK_TOKEN")}
    env["XDG_CONFIG_HOME"] = str(home)
    if url is not None:
        env["SHIPDECK_URL"] = url
    if token is not None:
        env["SHIPDECK_TOKEN"] = token
    return subprocess.run(
        [SHIPDECK, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_review_approve_apply_and_roll_back_from_the_terminal(
    world: World, server: str, tmp_path: Path
) -> None:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"}).id
    call(world, "alice", "submit_release", release_id=release)

    def as_user(user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return shipdeck(*args, url=server, token=world.tokens[user], home=tmp_path)

    inbox = as_user("bob", "approvals", "list", "--mine", "-o", "json")
    assert inbox.returncode == 0, inbox.stderr
    items = json.loads(inbox.stdout)["items"]
    assert [(a["release_id"], a["can_decide"]) for a in items] == [(release, True)]
    table = as_user("bob", "releases", "diff", release)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == ["SERVICE", "FIELD", "LIVE", "DESIRED"]
    assert row.split() == ["web", "image", "shop/web:1.4.1", "shop/web:1.5.0"]
    own = as_user("alice", "approvals", "approve", release)
    assert own.returncode == 1 and "needs the approver role" in own.stderr
    approved = as_user("bob", "approvals", "approve", release, "-m", "lgtm 🚀")
    assert approved.returncode == 0, approved.stderr
    assert "approved" in approved.stdout.splitlines()[1]
    applied = as_user("alice", "releases", "apply", release, "-o", "json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["lifecycle_state"] == "applied"
    status = as_user("victor", "targets", "status", "shop", "prod", "-o", "json")
    assert json.loads(status.stdout)[0]["services"]["web"]["image"] == "shop/web:1.5.0"
    back = as_user("alice", "releases", "rollback", "shop", "prod", "--service", "web")
    assert back.returncode == 0, back.stderr
    assert "pending_approval" in back.stdout
    listed = as_user("victor", "releases", "list", "--project", "shop", "-o", "json")
    states = [(r["id"], r["lifecycle_state"]) for r in json.loads(listed.stdout)["items"]]
    assert states[1] == (release, "applied") and states[0][1] == "pending_approval"


def test_config_file_env_and_errors(world: World, server: str, tmp_path: Path) -> None:
    none = shipdeck("releases", "list", url=None, token=None, home=tmp_path)
    assert none.returncode == 2 and "SHIPDECK_URL" in none.stderr
    config = tmp_path / "shipdeck" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'url = "{server}"\ntoken = "{world.tokens["victor"]}"\n')
    from_file = shipdeck("targets", "status", "-o", "table", url=None, token=None, home=tmp_path)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.split()[:6] == [
        "TARGET",
        "SERVICE",
        "IMAGE",
        "REPLICAS",
        "HEALTH",
        "APPLYING",
    ]
    bad = shipdeck("releases", "show", "R-1", url=None, token="sd_" + "x" * 40, home=tmp_path)
    assert bad.returncode == 1 and "token" in bad.stderr
    missing = shipdeck("releases", "show", "R-999", url=None, token=None, home=tmp_path)
    assert missing.returncode == 1 and "R-999" in missing.stderr
    config.write_text("url = [")
    broken = shipdeck("releases", "list", url=None, token=None, home=tmp_path)
    assert broken.returncode == 2 and "not valid TOML" in broken.stderr

"""`shipdeck chat`, the terminal client, driven through its stdin against a real server."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.cli.test_cli import SHIPDECK
from tests.conftest import World
from tests.support.calls import call
from tests.support.server import running_server


@pytest.fixture
def address(world: World) -> Iterator[str]:
    with running_server(world.services) as running:
        yield running


def _wait(world: World, release_id: str, state: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            if call(world, "alice", "get_release", release_id=release_id).lifecycle_state == state:
                return
        except Exception:  # not created yet
            pass
        assert time.monotonic() < deadline, f"{release_id} never reached {state}"
        time.sleep(0.1)


def test_terminal_client_deploys_with_keystrokes(world: World, address: str) -> None:
    assert SHIPDECK
    env = {**os.environ, "SHIPDECK_TOKEN": world.tokens["alice"], "COLUMNS": "120"}
    process = subprocess.Popen(
        [SHIPDECK, "chat", "--url", f"ws://{address}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert process.stdin is not None
    process.stdin.write("deploy web 1.5.0 to dev\n")
    process.stdin.flush()
    _wait(world, "R-1", "previewed")
    time.sleep(0.5)
    process.stdin.write("y\n")  # confirm the submit card
    process.stdin.flush()
    _wait(world, "R-1", "approved")
    time.sleep(0.5)
    process.stdin.write("y\n")  # confirm the apply card
    process.stdin.flush()
    _wait(world, "R-1", "applied")
    time.sleep(0.5)
    process.stdin.write("/quit\n")
    process.stdin.flush()
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert "Submit R-1 for shop/dev?" in output
    assert "web image: shop/web:1.4.1 → shop/web:1.5.0" in output
    assert "R-1 applied" in output
    # Each keystroke names the card it decides.
    assert "y → confirm #1 Submit R-1 for shop/dev?" in output
    assert "y → confirm #2" in output


def test_terminal_client_needs_a_token() -> None:
    assert SHIPDECK
    env = {k: v for k, v in os.environ.items() if k != "SHIPDECK_TOKEN"}
    result = subprocess.run(
        [SHIPDECK, "chat"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2 and "SHIPDECK_TOKEN" in result.stderr

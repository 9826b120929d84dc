"""`shipdeck load` takes the notifications and identities sections, audited, idempotent."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db import make_engine
from core.notify.models import NotifyIdentity, NotifyRoute
from tests.cli.test_cli import run
from tests.conftest import WORLD

ROUTES = """
notifications:
  - {name: ops, kind: webhook, url: "https://hooks.example/x", secret_env: HOOK_SECRET,
     projects: [Shop], environments: [prod], events: [approval_needed, failed]}
  - {name: chat, kind: slack, url: "https://hooks.slack.com/services/T/B/X"}
identities:
  slack: {U0BOB: bob}
  feishu: {ou_bob: bob, ou_erin: erin}
"""


def test_load_declares_routes_and_identities_once(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'load.db'}"
    world = tmp_path / "world.yaml"
    world.write_text(WORLD + ROUTES)
    first = run(db, "load", str(world))
    assert first.returncode == 0, first.stderr
    assert "notification route ops (webhook)" in first.stdout
    assert "identity links: 0 -> 3" in first.stdout
    again = run(db, "load", str(world))
    assert again.returncode == 0 and again.stdout.strip() == "nothing changed"
    with Session(make_engine(db)) as session:
        ops = session.get_one(NotifyRoute, "ops")
        assert (ops.projects, ops.events, ops.secret, ops.secret_env) == (
            ["shop"],
            ["approval_needed", "failed"],
            None,
            "HOOK_SECRET",
        )
        links = {
            (i.platform, i.external_id): i.user_name
            for i in session.scalars(select(NotifyIdentity))
        }
        assert links == {
            ("slack", "U0BOB"): "bob",
            ("feishu", "ou_bob"): "bob",
            ("feishu", "ou_erin"): "erin",
        }
    world.write_text(WORLD + "notifications: [{name: x, kind: teams, url: 'https://x'}]\n")
    bad = run(db, "load", str(world))
    assert bad.returncode == 1 and "notifications.0.kind" in bad.stderr

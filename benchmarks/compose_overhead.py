"""shipdeck preview+apply of one Compose service vs `docker compose up -d --wait`, one run.

Both sides flip service `web` between demo/web:1 and demo/web:2 (images FROM scratch with a
1 s health check) on a real Docker engine, interleaved so both see the same machine. shipdeck's
time runs from the preview call to `applied` (preview, submit, drift check, apply, health
wait, with its database on SQLite). Prints medians, p90 and the overhead ratio (goal <= 1.15x).

    python -m benchmarks.compose_overhead [--rounds 8]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from api.wiring import Services
from core.config import Settings
from core.identity.service import actor_for, ensure_user, set_grant
from core.permissions import SYSTEM, Role
from core.targets.service import load_declaration, parse_declaration
from runtimes.compose import ComposeAdapter
from tests.support.docker import build_images, engine_problem, static_busybox
from tools.registry import get_tool


def spec(tag: str) -> dict[str, object]:
    return {"services": {"web": {"image": f"demo/web:{tag}", "network_mode": "none", "init": True}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    problem = engine_problem()
    busybox = static_busybox()
    if problem or busybox is None:
        raise SystemExit(f"needs a Docker engine and busybox-static: {problem or 'no busybox'}")
    build_images(busybox)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        services = Services.build(
            Settings(database_url=f"sqlite:///{directory / 'bench.db'}"), inline_apply=True
        )
        services.migrate()
        adapter = services.runtimes.get("compose")
        assert isinstance(adapter, ComposeAdapter)
        ours, theirs = f"bench-sd-{uuid.uuid4().hex[:6]}", f"bench-dc-{uuid.uuid4().hex[:6]}"
        (directory / "compose.yaml").write_text(yaml.safe_dump(spec("1")))
        for tag in ("1", "2"):
            (directory / f"direct-{tag}.yaml").write_text(yaml.safe_dump(spec(tag)))
        declaration = f"""
projects:
  - name: bench
    services: [web]
    targets:
      - {{environment: staging, runtime: compose, compose_files: [compose.yaml],
         compose_project: {ours}, stable_seconds: 1}}
"""
        with services.sessions() as session:
            load_declaration(
                session,
                actor=SYSTEM,
                declaration=parse_declaration(declaration),
                base_dir=directory,
            )
            user = ensure_user(session, "bench")
            set_grant(session, user, Role.admin, None)
            session.commit()
            actor = actor_for(user)
        ctx = services.context(actor)

        def compose(project: str, file: str, *extra: str) -> None:
            subprocess.run(
                [
                    "docker",
                    "--config",
                    adapter._config_dir,
                    "compose",
                    "-f",
                    str(directory / file),
                    "-p",
                    project,
                    *extra,
                ],
                check=True,
                capture_output=True,
            )

        compose(ours, "compose.yaml", "up", "-d", "--wait")
        compose(theirs, "direct-1.yaml", "up", "-d", "--wait")

        def shipdeck(tag: str) -> float:
            start = time.perf_counter()
            release = get_tool("preview_release").run(
                ctx,
                {
                    "project": "bench",
                    "environment": "staging",
                    "changes": {"web": {"image_tag": tag}},
                },
            )
            get_tool("submit_release").run(ctx, {"release_id": release.id})
            get_tool("apply_release").run(ctx, {"release_id": release.id})
            elapsed = time.perf_counter() - start
            state = get_tool("get_release").run(ctx, {"release_id": release.id}).lifecycle_state
            assert state == "applied", state
            return elapsed

        def direct(tag: str) -> float:
            start = time.perf_counter()
            compose(theirs, f"direct-{tag}.yaml", "up", "-d", "--wait")
            return time.perf_counter() - start

        ours_times, theirs_times = [], []
        try:
            for round_ in range(args.rounds):
                tag = "2" if round_ % 2 == 0 else "1"
                theirs_times.append(direct(tag))
                ours_times.append(shipdeck(tag))
        finally:
            compose(ours, "compose.yaml", "down", "-t", "1")
            compose(theirs, "direct-1.yaml", "down", "-t", "1")
            services.close()

    def p90(values: list[float]) -> float:
        return statistics.quantiles(values, n=10, method="inclusive")[8]

    print(f"one compose service, image flip with a 1 s health check, {args.rounds} rounds each")
    print(f"  {'':<36}{'median s':>10}{'p90 s':>9}")
    print(
        f"  {'docker compose up -d --wait':<36}{statistics.median(theirs_times):>10.2f}"
        f"{p90(theirs_times):>9.2f}"
    )
    print(
        f"  {'shipdeck preview+submit+apply':<36}{statistics.median(ours_times):>10.2f}"
        f"{p90(ours_times):>9.2f}"
    )
    ratio = statistics.median(ours_times) / statistics.median(theirs_times)
    print(f"  overhead ratio (median): {ratio:.2f}x  (goal <= 1.15x)")


if __name__ == "__main__":
    main()

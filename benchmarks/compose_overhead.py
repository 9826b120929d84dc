"""shipdeck preview+submit+apply of one Compose service vs `docker compose up -d --wait`, one run.

`shipdeck serve` runs in its own process (database: a throwaway PostgreSQL cluster by default)
and this process is the client: it calls REST (`POST /api/v1/tools/preview_release`,
`submit_release`, `apply_release`) and waits for `applied` as `shipdeck releases apply` does:
`GET /api/v1/releases/{id}?wait=60&while_state=approved&while_state=applying`, a long-poll the
server answers when the release's next state commits (`--poll 0.02` polls every 20 ms instead,
as this benchmark did before the long-poll existed). The raw side runs
`docker compose -p P -f F up -d --wait SERVICE` on its own compose project with the same
services. Both flip one service between two images, interleaved round by
round, on a real Docker engine:

- `web`: an image WITH a health check (interval 1 s): both sides wait for Docker's `healthy`;
- `worker`: an image WITHOUT a health check: `up --wait` returns once the container runs;
  shipdeck also waits for its stability window (`stable_seconds`, default here 1 s), counted
  from the container's own start time (`State.StartedAt`), so the time compose already spent
  counts towards it. The raw side is printed alone and with the same window added the same way
  (wait until StartedAt + window), to show what the window costs and what shipdeck adds.

Images are built FROM scratch with static busybox under tags unique to the run
(`shipdeck-bench-<run>/web:1` ...) and removed afterwards: no other program can re-tag them.

    python -m benchmarks.compose_overhead [--rounds 8] [--stable 1] [--databases postgresql sqlite]
        [--poll SECONDS]

BENCH_TIMELINE=1 prints, per shipdeck apply, when each step of its timeline happened relative to
the apply call (`apply` started, `compose up` began, healthy, `applied`, seen by the client).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sysconfig
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import httpx2 as httpx
import yaml

from benchmarks.serving import database, served

HEALTH = "HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD true"


def build(run: str, busybox: Path) -> dict[str, str]:
    """Four images under run-unique tags; returns service:version -> tag."""
    tags = {}
    for service, health in (("web", True), ("worker", False)):
        for version in ("1", "2"):
            tag = f"shipdeck-bench-{run}/{service}:{version}"
            with tempfile.TemporaryDirectory() as directory:
                shutil.copy(busybox, Path(directory) / "busybox")
                lines = [
                    "FROM scratch",
                    "COPY busybox /bin/busybox",
                    'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
                    *([HEALTH] if health else []),
                    f'CMD ["sh", "-c", "echo {service} {version} up; exec sleep 3600"]',
                ]
                (Path(directory) / "Dockerfile").write_text("\n".join(lines) + "\n")
                subprocess.run(
                    ["docker", "build", "-q", "-t", tag, directory], check=True, capture_output=True
                )
            tags[f"{service}:{version}"] = tag
    return tags


def compose_file(tags: dict[str, str], web: str, worker: str) -> dict[str, object]:
    """Both services, `init: true` so a stop never waits 10 s, no network (nothing to pull)."""
    return {
        "services": {
            name: {"image": tags[f"{name}:{version}"], "network_mode": "none", "init": True}
            for name, version in (("web", web), ("worker", worker))
        }
    }


def docker_config() -> str:
    """A private Docker CLI config that finds the Compose plugin of this environment."""
    directory = tempfile.mkdtemp(prefix="shipdeck-bench-docker-")
    config = {"cliPluginsExtraDirs": [sysconfig.get_path("scripts")]}
    (Path(directory) / "config.json").write_text(json.dumps(config))
    return directory


def started_at(config: str, project: str, service: str) -> float:
    """The service's container's State.StartedAt, as a time.time() value."""
    ids = subprocess.run(
        ["docker", "--config", config, "compose", "-p", project, "ps", "-q", service],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    raw = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.StartedAt}}", ids[0]],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Docker prints nanoseconds; fromisoformat takes at most microseconds.
    head, _, rest = raw.partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())[:6]
    return datetime.fromisoformat(f"{head}.{fraction or '0'}+00:00").timestamp()


def seed(url: str, key: str, directory: Path, project: str, stable: float) -> str:
    """Declare the compose target; returns an admin token."""
    from api.wiring import Services
    from core.config import Settings
    from core.identity.service import ensure_user, issue_token, set_grant
    from core.permissions import SYSTEM, Role
    from core.targets.service import load_declaration, parse_declaration

    services = Services.build(Settings(database_url=url, audit_key=key))
    services.migrate()
    declaration = f"""
projects:
  - name: bench
    services: [web, worker]
    targets:
      - {{environment: staging, runtime: compose, compose_files: [compose.yaml],
         compose_project: {project}, stable_seconds: {stable}}}
"""
    with services.sessions() as session:
        load_declaration(
            session, actor=SYSTEM, declaration=parse_declaration(declaration), base_dir=directory
        )
        user = ensure_user(session, "bench")
        set_grant(session, user, Role.admin, None)
        token = issue_token(session, user)
        session.commit()
    services.close()
    return token


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def run(
    kind: str, args: argparse.Namespace, tags: dict[str, str], config: str
) -> dict[str, list[float]]:
    """Interleaved rounds on one database; seconds per side and service."""
    times: dict[str, list[float]] = {}
    steps: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp, database(kind) as url:
        directory = Path(tmp)
        run_id = uuid.uuid4().hex[:6]
        ours, theirs = f"bench-sd-{run_id}", f"bench-dc-{run_id}"
        (directory / "compose.yaml").write_text(yaml.safe_dump(compose_file(tags, "1", "1")))
        for web in ("1", "2"):
            for worker in ("1", "2"):
                flipped = compose_file(tags, web, worker)
                (directory / f"direct-{web}{worker}.yaml").write_text(yaml.safe_dump(flipped))

        def compose(project: str, file: str, *extra: str) -> None:
            subprocess.run(
                ["docker", "--config", config, "compose", "-f", str(directory / file)]
                + ["-p", project, *extra],
                check=True,
                capture_output=True,
            )

        key = secrets.token_hex(32)
        token = seed(url, key, directory, ours, args.stable)
        compose(ours, "compose.yaml", "up", "-d", "--wait")
        compose(theirs, "direct-11.yaml", "up", "-d", "--wait")
        headers = {"Authorization": f"Bearer {token}"}
        state = {"web": "1", "worker": "1"}
        try:
            with (
                served(url, env={"SHIPDECK_AUDIT_KEY": key}) as base,
                httpx.Client(base_url=base, timeout=120) as client,
            ):

                def tool(name: str, body: dict[str, object]) -> dict[str, object]:
                    response = client.post(f"/api/v1/tools/{name}", json=body, headers=headers)
                    response.raise_for_status()
                    return dict(response.json())

                def shipdeck(service: str, version: str) -> float:
                    start = time.perf_counter()
                    changes = {service: {"image_tag": version}}
                    body: dict[str, object] = {"project": "bench", "environment": "staging"}
                    body["changes"] = changes
                    rid = tool("preview_release", body)["id"]
                    previewed = time.perf_counter()
                    tool("submit_release", {"release_id": rid})
                    submitted = time.perf_counter()
                    applying = time.time()
                    tool("apply_release", {"release_id": rid})
                    params: dict[str, str | list[str]] = {}
                    if not args.poll:  # the long-poll
                        params = {"wait": "60", "while_state": ["approved", "applying"]}
                    while True:
                        got = client.get(
                            f"/api/v1/releases/{rid}", headers=headers, params=params
                        ).json()
                        if got["lifecycle_state"] not in ("approved", "applying"):
                            break
                        time.sleep(args.poll)
                    elapsed = time.perf_counter() - start
                    steps[f"preview {service}"].append(previewed - start)
                    steps[f"submit {service}"].append(submitted - previewed)
                    steps[f"apply {service}"].append(start + elapsed - submitted)
                    assert got["lifecycle_state"] == "applied", got
                    if os.environ.get("BENCH_TIMELINE"):
                        seen = time.time()
                        line = client.get(f"/api/v1/releases/{rid}/timeline", headers=headers)
                        marks = [
                            (e["action"] or e["message"][:24], e["at"])
                            for e in line.json()["entries"]
                        ]
                        stamps = [datetime.fromisoformat(at).timestamp() for _, at in marks]
                        gaps = " ".join(
                            f"{name}@{t - applying:+.3f}"
                            for (name, _), t in zip(marks, stamps, strict=True)
                            if t >= applying
                        )
                        print(f"    {service}: {gaps} seen@{seen - applying:+.3f}")
                    return elapsed

                def direct(service: str) -> tuple[float, float]:
                    start = time.perf_counter()
                    file = f"direct-{state['web']}{state['worker']}.yaml"
                    compose(theirs, file, "up", "-d", "--wait", service)
                    elapsed = time.perf_counter() - start
                    if service == "web":
                        return elapsed, elapsed
                    # the same stability window, counted the way shipdeck counts it
                    left = started_at(config, theirs, service) + args.stable - time.time()
                    if left > 0:
                        time.sleep(left)
                    return elapsed, time.perf_counter() - start

                for round_ in range(args.rounds + 1):  # the first round warms up
                    for service in ("web", "worker"):
                        version = "2" if state[service] == "1" else "1"
                        state[service] = version
                        raw, windowed = direct(service)
                        ours_s = shipdeck(service, version)
                        if round_ == 0:
                            continue
                        times.setdefault(f"raw {service}", []).append(raw)
                        times.setdefault(f"raw+window {service}", []).append(windowed)
                        times.setdefault(f"shipdeck {service}", []).append(ours_s)
            times.update({f"step {k}": v[1:] for k, v in steps.items()})  # not the warm-up
        finally:
            compose(ours, "compose.yaml", "down", "-t", "1")
            compose(theirs, "direct-11.yaml", "down", "-t", "1")
    return times


def report(kind: str, times: dict[str, list[float]], args: argparse.Namespace) -> None:
    """One database's table and ratios."""
    print(f"\nshipdeck's database: {kind}; {args.rounds} rounds per side and service")
    print(f"  {'':<58}{'median s':>10}{'p90 s':>8}")
    rows = [
        ("web (health check): docker compose up -d --wait web", "raw web"),
        ("web (health check): shipdeck preview+submit+apply", "shipdeck web"),
        ("worker (no health check): docker compose up -d --wait", "raw worker"),
        (f"worker: up -d --wait + {args.stable:g} s window from StartedAt", "raw+window worker"),
        (f"worker: shipdeck preview+submit+apply ({args.stable:g} s window)", "shipdeck worker"),
    ]
    for label, key in rows:
        values = times[key]
        print(f"  {label:<58}{statistics.median(values):>10.2f}{p90(values):>8.2f}")

    for service in ("web", "worker"):
        parts = ", ".join(
            f"{step} {statistics.median(times[f'step {step} {service}']):.2f} s"
            for step in ("preview", "submit", "apply")
        )
        print(f"  shipdeck {service}, medians per call: {parts} (apply: call -> applied)")

    def ratio(ours: str, theirs: str) -> float:
        return statistics.median(times[ours]) / statistics.median(times[theirs])

    print(
        f"  ratio (medians), goal <= 1.15x: with a health check "
        f"{ratio('shipdeck web', 'raw web'):.2f}x; without one "
        f"{ratio('shipdeck worker', 'raw worker'):.2f}x against bare `up --wait`, "
        f"{ratio('shipdeck worker', 'raw+window worker'):.2f}x against `up --wait` + the window"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--stable", type=float, default=1.0)
    parser.add_argument("--databases", nargs="+", default=["postgresql"])
    parser.add_argument(
        "--poll", type=float, default=0.0, help="poll every SECONDS instead of the long-poll"
    )
    args = parser.parse_args()
    from tests.support.docker import engine_problem, static_busybox

    problem = engine_problem()
    busybox = static_busybox()
    if problem or busybox is None:
        raise SystemExit(f"needs a Docker engine and busybox-static: {problem or 'no busybox'}")
    run_id = uuid.uuid4().hex[:8]
    config = docker_config()
    tags = build(run_id, busybox)
    print(f"compose overhead; images {', '.join(sorted(tags.values()))}; {os.cpu_count()} CPUs")
    try:
        for kind in args.databases:
            report(kind, run(kind, args, tags, config), args)
    finally:
        subprocess.run(["docker", "rmi", "-f", *tags.values()], capture_output=True)
        shutil.rmtree(config, ignore_errors=True)


if __name__ == "__main__":
    main()

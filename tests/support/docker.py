"""A real Docker engine for tests, and demo images built FROM scratch with static busybox."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException

# tag -> (CMD, HEALTHCHECK or None). web images have health checks, worker images do not.
IMAGES: dict[str, tuple[str, str | None]] = {
    "demo/web:1": ("echo web 1 up; exec sleep 3600", "true"),
    "demo/web:2": ("echo web 2 up; exec sleep 3600", "true"),
    "demo/web:3-unhealthy": (
        "echo web 3 up, but /ready never appears; exec sleep 3600",
        "test -e /ready",
    ),
    "demo/worker:1": ("echo worker 1 up; exec sleep 3600", None),
    "demo/worker:2": ("echo worker 2 up; exec sleep 3600", None),
    "demo/worker:crash": ("echo worker starting; echo 'boom: cannot open queue' >&2; exit 3", None),
}


def engine_problem() -> str | None:
    """Why the Docker engine cannot be used, or None when it answers."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        DockerClient().system.info()
    except DockerException as exc:
        return f"no Docker engine answers ({(exc.stderr or str(exc)).strip()[:200]})"
    return None


def static_busybox() -> Path | None:
    """A statically linked busybox (from busybox-static), usable in a FROM scratch image."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.exists():
            # ldd says so (and fails) for a static binary; a dynamic one cannot run FROM scratch.
            linked = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
            if linked.returncode != 0 or "not a dynamic executable" in linked.stdout:
                return path
    return None


def build_images(busybox: Path) -> None:
    """Build every demo image that is not there yet (nothing is pulled)."""
    client = DockerClient()
    for tag, (command, health) in IMAGES.items():
        if client.image.exists(tag):
            continue
        with tempfile.TemporaryDirectory() as directory:
            shutil.copy(busybox, Path(directory) / "busybox")
            lines = [
                "FROM scratch",
                "COPY busybox /bin/busybox",
                'RUN ["/bin/busybox", "--install", "-s", "/bin"]',
            ]
            if health:
                lines.append(f"HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD {health}")
            lines.append(f'CMD ["sh", "-c", "{command}"]')
            (Path(directory) / "Dockerfile").write_text("\n".join(lines) + "\n")
            subprocess.run(
                ["docker", "build", "-q", "-t", tag, directory],
                check=True,
                capture_output=True,
            )

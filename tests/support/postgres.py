"""A throwaway PostgreSQL cluster from the machine's own binaries."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN_DIRS = [Path("/usr/lib/postgresql/15/bin"), *sorted(Path("/usr/lib/postgresql").glob("*/bin"))]


def find_bin(name: str) -> Path | None:
    """initdb / pg_ctl from the PostgreSQL install, or PATH."""
    for directory in BIN_DIRS:
        if (directory / name).exists():
            return directory / name
    found = shutil.which(name)
    return Path(found) if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """initdb + pg_ctl start in a temp dir on a free port; yields a SQLAlchemy URL."""
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise FileNotFoundError("initdb/pg_ctl not found (install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="shipdeck-pg-"))
    data = root / "data"
    port = free_port()
    env = dict(os.environ)
    user = "postgres"
    preexec = None
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: run it as `nobody`-like postgres user if present.
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pw = pwd.getpwnam("nobody")
        os.chown(root, pw.pw_uid, pw.pw_gid)

        def preexec() -> None:
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

    subprocess.run(
        [str(initdb), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
        preexec_fn=preexec,
        env=env,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    options += " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    subprocess.run(
        [str(pg_ctl), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
        check=True,
        capture_output=True,
        preexec_fn=preexec,
        env=env,
    )
    try:
        subprocess.run(
            [str(find_bin("createdb")), "-h", "127.0.0.1", "-p", str(port), "-U", user, "shipdeck"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/shipdeck"
    finally:
        subprocess.run(
            [str(pg_ctl), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            preexec_fn=preexec,
        )
        shutil.rmtree(root, ignore_errors=True)

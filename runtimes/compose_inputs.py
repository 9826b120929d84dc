"""What `docker compose config` renders from, so a rendered config can be reused safely.

Rendering runs the compose binary (0.15-0.3 s here), and a release renders at preview and
again at apply for its drift check. The render is a function of its inputs: the compose files,
every file they pull in (`include`, `extends.file`, `env_file`, `label_file`), the project's
`.env`, and the process environment (interpolation). A digest of all of them keys the cache:
any edit, even one that keeps a file's size and modification time, renders afresh.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

MAX_FILES = 200  # an include/extends web bigger than this is rendered every time


def _paths(value: Any) -> Iterator[str]:
    """Path strings of an `env_file`/`include`-style value: str, list of str or of {path}."""
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            path = item.get("path")
            yield from _paths(path) if path is not None else ()


def _references(document: dict[str, Any]) -> Iterator[str]:
    for entry in document.get("include") or []:
        yield from _paths(entry)
        if isinstance(entry, dict):
            yield from _paths(entry.get("env_file") or [])
            if isinstance(entry.get("project_directory"), str):
                yield str(Path(entry["project_directory"]) / ".env")
    services = document.get("services")
    for service in services.values() if isinstance(services, dict) else []:
        if not isinstance(service, dict):
            continue
        for key in ("env_file", "label_file"):
            yield from _paths(service.get(key) or [])
        extends = service.get("extends")
        if isinstance(extends, dict) and isinstance(extends.get("file"), str):
            yield extends["file"]


def render_inputs(files: list[Path]) -> list[Path] | None:
    """Every file the render of `files` reads; None when that cannot be known statically.

    Unknowable: a referenced path built from `${VARIABLES}`, a file that does not parse as a
    mapping (compose reports it when rendering), or more than MAX_FILES files.
    """
    if not files:
        return None
    # Compose reads `.env` from the project directory; older releases from the working one.
    found: list[Path] = [files[0].parent / ".env", Path.cwd() / ".env"]
    queue = list(files)
    while queue:
        path = queue.pop()
        if path in found:
            continue
        found.append(path)
        if len(found) > MAX_FILES:
            return None
        try:
            document = yaml.safe_load(path.read_bytes())
        except FileNotFoundError:
            continue  # a missing optional file is part of the digest as missing
        except (OSError, yaml.YAMLError):
            return None
        if document is None:
            continue
        if not isinstance(document, dict):
            return None
        for reference in _references(document):
            if "$" in reference:
                return None
            target = path.parent / reference
            if target.suffix in {".yaml", ".yml"}:
                queue.append(target)
            elif target not in found:
                found.append(target)
    return found


def render_key(files: list[Path]) -> str | None:
    """A digest of everything the render of `files` depends on; None: render every time."""
    inputs = render_inputs(files)
    if inputs is None:
        return None
    digest = hashlib.sha256()
    for path in sorted(set(inputs)):
        digest.update(str(path).encode() + b"\0")
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except FileNotFoundError:
            digest.update(b"missing")
        except OSError:
            return None
    for name, value in sorted(os.environ.items()):
        digest.update(f"{name}={value}\0".encode())
    return digest.hexdigest()

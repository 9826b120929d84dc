"""Where a declaration's files may be: its own folder or an allow-listed root, nowhere else."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.errors import InvalidInput


def confine(raw: str, *, base_dir: Path | None, roots: Sequence[Path], where: str) -> str:
    """The absolute, symlink-resolved path of `raw`, or InvalidInput if it leads outside.

    Relative paths are taken from the declaration's folder. Symlinks are followed before the
    check, so a link inside the folder that points at /etc/shadow is outside. The message
    names the path as given (the caller's own input) and never reads the file.
    """
    shown = raw if len(raw) <= 200 else raw[:200] + "…"
    path = Path(raw).expanduser()
    if not path.is_absolute():
        if base_dir is None:
            raise InvalidInput(
                f"{where}: {shown!r} is relative, and this declaration was not loaded from a "
                "file whose folder it could be relative to"
            )
        path = base_dir / path
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise InvalidInput(f"{where}: {shown!r} cannot be resolved") from exc
    allowed = ([base_dir] if base_dir is not None else []) + list(roots)
    for root in allowed:
        if resolved.is_relative_to(root.expanduser().resolve()):
            return str(resolved)
    raise InvalidInput(
        f"{where}: {shown!r} is outside the declaration's folder"
        + (f" ({base_dir})" if base_dir is not None else "")
        + " and the allowed roots (SHIPDECK_ALLOWED_PATH_ROOTS); move the file there or "
        "allow its folder",
        field=where,
    )

"""`--output json|table`: JSON for scripts, aligned columns for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import typer


class Output(StrEnum):
    """How results are printed."""

    table = "table"
    json = "json"


def emit_json(data: Any) -> None:
    """Print data as indented JSON (non-ASCII kept readable)."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def emit_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows under headers, columns aligned; long cells are cut to keep lines readable."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    line = "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))
    typer.echo(line.rstrip())
    for row in cells:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        typer.echo("(none)")


def _cell(value: Any) -> str:
    text = "-" if value is None or value == "" else str(value)
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:59] + "…"


def changes_text(changes: dict[str, Any]) -> str:
    """`web=shop/web:1.5.0, api x3` from a release's requested changes."""
    parts: list[str] = []
    for service, change in sorted((changes or {}).items()):
        if not isinstance(change, dict):
            continue
        bits = [str(change[k]) for k in ("image", "image_tag") if change.get(k)]
        if change.get("replicas") is not None:
            bits.append(f"x{change['replicas']}")
        parts.append(f"{service} {' '.join(bits)}".strip())
    return ", ".join(parts)

"""Free text from outside (reasons, comments, log lines) bounded in one place."""

from __future__ import annotations

MARKER = "… [{n} more characters cut]"


def clip(value: str, limit: int) -> str:
    """`value` cut to at most `limit` characters, with a marker saying how much was cut."""
    if len(value) <= limit:
        return value
    for keep in range(max(limit - len(MARKER.format(n=len(value))), 0), -1, -1):
        marker = MARKER.format(n=len(value) - keep)
        if keep + len(marker) <= limit:
            return value[:keep] + marker
    return value[:limit]  # a limit shorter than the marker: plain cut


def first_line(value: str, limit: int = 200) -> str:
    """The first line of `value`, clipped: a short reason for logs and cards."""
    return clip(value.strip().splitlines()[0] if value.strip() else "", limit)

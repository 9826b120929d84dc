"""Cron-style change windows: when does a declared allow/deny window stand open?"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

# minute, hour, day of month, month, day of week (0 or 7 = Sunday)
FIELDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
NAMES = ("minute", "hour", "day of month", "month", "day of week")


def parse_cron(expression: str) -> tuple[frozenset[int], ...]:
    """The allowed values of each of the five fields; ValueError names what is wrong."""
    parts = expression.split()
    if len(parts) != 5:
        raise ValueError("a cron expression has five fields: minute hour day month weekday")
    fields = []
    for part, (low, high), name in zip(parts, FIELDS, NAMES, strict=True):
        values: set[int] = set()
        for item in part.split(","):
            values |= _item(item, low, high, name)
        if name == "day of week" and 7 in values:
            values = (values - {7}) | {0}
        fields.append(frozenset(values))
    return tuple(fields)


def _item(item: str, low: int, high: int, name: str) -> set[int]:
    body, _, step_text = item.partition("/")
    try:
        step = int(step_text) if step_text else 1
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, last = body.split("-", 1)
            start, end = int(first), int(last)
        else:
            start = end = int(body)
    except ValueError:
        raise ValueError(f"bad {name} field {item!r}") from None
    if step < 1 or not low <= start <= end <= high:
        raise ValueError(f"{name} {item!r} is outside {low}-{high}")
    return set(range(start, end + 1, step))


def matches(fields: tuple[frozenset[int], ...], at: datetime) -> bool:
    """Whether the cron fields match the minute `at` (local time)."""
    minute, hour, day, month, weekday = fields
    cron_weekday = (at.weekday() + 1) % 7  # Python: Monday 0; cron: Sunday 0
    return (
        at.minute in minute
        and at.hour in hour
        and at.day in day
        and at.month in month
        and cron_weekday in weekday
    )


@dataclass(frozen=True)
class OpenWindow:
    """A window standing open now, and when it closes."""

    kind: str
    cron: str
    timezone: str
    closes_at: datetime
    reason: str | None


def open_window(window: dict[str, Any], now: datetime) -> OpenWindow | None:
    """The window, if a start within its duration before `now` makes it open now."""
    fields = parse_cron(str(window["cron"]))
    zone = ZoneInfo(str(window.get("timezone") or "UTC"))
    local = now.astimezone(zone).replace(second=0, microsecond=0)
    duration = int(window["duration_minutes"])
    for back in range(duration):
        start = local - timedelta(minutes=back)
        if matches(fields, start):
            return OpenWindow(
                kind=str(window["kind"]),
                cron=str(window["cron"]),
                timezone=zone.key,
                closes_at=start + timedelta(minutes=duration),
                reason=window.get("reason"),
            )
    return None

"""The time zone people's times are read in: the setting's, else the server's own."""

from __future__ import annotations

import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.errors import InvalidInput


def zone_named(name: str) -> ZoneInfo:
    """The zone of an IANA name, or InvalidInput naming it."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {name[:64]!r}", timezone=name[:64]) from None


def server_zone(setting: str | None = None) -> str:
    """The IANA name of `setting`, else of the server's zone (TZ, /etc/localtime), else UTC."""
    for candidate in (setting, os.environ.get("TZ", "").lstrip(":"), _localtime()):
        if candidate:
            try:
                return ZoneInfo(candidate).key
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return "UTC"


def _localtime() -> str | None:
    try:
        target = Path("/etc/localtime").resolve(strict=True)
    except OSError:
        return None
    parts = target.parts
    return "/".join(parts[parts.index("zoneinfo") + 1 :]) if "zoneinfo" in parts else None

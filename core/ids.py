"""Human-friendly release ids: `R-42` is release number 42."""

from __future__ import annotations

import re

from core.errors import InvalidInput

_RELEASE_ID = re.compile(r"^\s*[Rr]-?(\d{1,12})\s*$")


def release_id(number: int) -> str:
    """Format a release number as its public id."""
    return f"R-{number}"


def parse_release_id(value: str | int) -> int:
    """Parse `R-42`, `r42` or `42` into the release number, or raise InvalidInput."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value > 0:
            return value
    elif isinstance(value, str):
        match = _RELEASE_ID.match(value)
        if match:
            return int(match.group(1))
        if value.strip().isdigit():
            return int(value.strip())
    raise InvalidInput(f"{value!r} is not a release id (expected the form R-42)", value=str(value))

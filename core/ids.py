"""Human-friendly release ids: `R-42` is release number 42."""

from __future__ import annotations

import re

from core.errors import InvalidInput
from core.text import clip

# `R-42`, `r42` or `42`: a number from 1 to 999,999,999 (none reaches past the INTEGER column),
# ASCII digits and spaces only. The doors' schema uses this pattern (tools.inputs), so the
# schema and the parser accept the same strings; matched whole here (`fullmatch`: `$` would
# also match before a final newline).
RELEASE_ID = r"^ *(?:[Rr]-?)?0*([1-9][0-9]{0,8}) *$"
_RELEASE_ID = re.compile(RELEASE_ID[1:-1])


def release_id(number: int) -> str:
    """Format a release number as its public id."""
    return f"R-{number}"


# Ids, release numbers and sequence numbers are 32-bit INTEGER columns. PostgreSQL refuses to
# compare one with a larger value ("integer out of range": a 500) where SQLite finds nothing,
# so every door refuses a larger id or cursor as input.
MAX_ID = 2**31 - 1


def parse_release_id(value: str | int) -> int:
    """Parse `R-42`, `r42` or `42` into the release number, or raise InvalidInput."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 < value <= MAX_ID:
            return value
    elif isinstance(value, str):
        match = _RELEASE_ID.fullmatch(value)
        if match:  # at most 9 digits: a huge one never reaches int()
            return int(match.group(1))
    shown = clip(str(value), 64)  # the refusal quotes the input, never 10,000 characters of it
    raise InvalidInput(
        f"{shown!r} is not a release id (expected the form R-42, at most 9 digits)", value=shown
    )

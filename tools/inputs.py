"""Shared input field types."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator, Field

from core.ids import RELEASE_ID

NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


ReleaseId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=24,
        pattern=RELEASE_ID,
        description="Release id, e.g. R-42.",
        examples=["R-42"],
    ),
]
ProjectName = Annotated[str, Field(pattern=NAME, description="Project name, e.g. shop.")]
Environment = Annotated[
    str, Field(pattern=NAME, description="Environment name, e.g. dev, staging, prod.")
]
ServiceName = Annotated[str, Field(pattern=NAME, description="Service name, e.g. web.")]
Comment = Annotated[str, Field(max_length=2000)]
PageSize = Annotated[int, Field(default=50, ge=1, le=200, description="Items per page.")]

# RFC 3339, as JSON Schema's `date-time` means it: a bare number or a date alone is not a time
# (pydantic alone would read "0" as 1970), and without a zone the time is ambiguous.
RFC3339 = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def _rfc3339(value: object) -> object:
    if isinstance(value, datetime) or (isinstance(value, str) and re.match(RFC3339, value)):
        return value
    raise ValueError("expected an RFC 3339 time with a zone, e.g. 2026-12-01T09:00:00Z")


Instant = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]

"""History search: release filters by service, time and free text, as SQL conditions."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TypeVar

from sqlalchemy import ColumnElement, String, cast, func, literal, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from core.errors import InvalidInput
from core.identity.models import User
from core.ids import parse_release_id
from core.releases.models import Release

# A person's search is short; the cap also keeps SQLite's LIKE pattern limit (50,000 bytes)
# safe once every character is JSON-escaped (an emoji becomes 12 characters).
TEXT_MAX = 200
ESCAPE = "\\"
T = TypeVar("T", str, str | None)
# The field names of a change (runtimes.base.ServiceChange) as JSON writes them: taken out
# before matching, so "tag" or "_" find versions and images, not every release.
CHANGE_KEYS = ('"image_tag": ', '"image": ', '"replicas": ', '"unset_env": ', '"env": ')


def like_pattern(needle: str) -> str:
    """`%needle%` with LIKE's wildcards (and the escape character) taken literally."""
    escaped = needle.replace(ESCAPE, ESCAPE * 2).replace("%", ESCAPE + "%")
    return "%" + escaped.replace("_", ESCAPE + "_") + "%"


def _contains(
    column: ColumnElement[T] | InstrumentedAttribute[T], needle: str
) -> ColumnElement[bool]:
    return func.lower(column).like(like_pattern(needle.lower()), escape=ESCAPE)


def service_filter(service: str) -> ColumnElement[bool]:
    """Releases that change `service` (one of the comma-joined names in `services_key`)."""
    key = literal(",") + Release.services_key + literal(",")
    return key.like(like_pattern(f",{service},"), escape=ESCAPE)


def time_filters(since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    """Releases created at `since <= created_at < until` (aware times only; an empty range
    matches nothing)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} needs a time zone (e.g. 2026-12-01T09:00:00Z)")
    out: list[ColumnElement[bool]] = []
    if since is not None:
        out.append(Release.created_at >= since)
    if until is not None:
        out.append(Release.created_at < until)
    return out


def text_filter(text: str) -> ColumnElement[bool] | None:
    """Releases whose id, change (version, image, service), reason or requester contain `text`.

    Case-insensitive; `%` and `_` are literal characters, never wildcards. None: no filter.
    """
    needle = text.strip()
    if not needle:
        return None
    if len(needle) > TEXT_MAX:
        raise InvalidInput(f"search text is limited to {TEXT_MAX} characters", limit=TEXT_MAX)
    # `changes` is stored as JSON text: search it in the form JSON gives the needle there.
    in_json = json.dumps(needle)[1:-1]
    changes: ColumnElement[str] = cast(Release.changes, String)
    for key in CHANGE_KEYS:
        changes = func.replace(changes, key, "")
    requesters = select(User.id).where(_contains(User.name, needle))
    conditions: list[ColumnElement[bool]] = [
        _contains(changes, in_json),
        _contains(Release.reason, needle),
        Release.requested_by_id.in_(requesters),
    ]
    try:
        # "R-42" or "42" also finds that release; a number past the ids (a 12-digit tag) is
        # only searched as text: PostgreSQL refuses to compare it with the INTEGER column
        conditions.append(Release.number == parse_release_id(needle))
    except InvalidInput:
        pass
    return or_(*conditions)

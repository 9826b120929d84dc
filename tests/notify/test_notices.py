"""Which audit events are notifications (a table, both ways)."""

from __future__ import annotations

import pytest

from core.audit.models import AuditEvent
from core.notify.notices import classify


@pytest.mark.parametrize(
    ("action", "before", "after", "data", "expected"),
    [
        ("submit", "previewed", "pending_approval", {}, "approval_needed"),
        ("approve", "pending_approval", "pending_approval", {"next_step": 2}, "approval_needed"),
        ("approve", "pending_approval", "approved", {}, "approved"),
        ("reject", "pending_approval", "rejected", {}, "rejected"),
        ("applied", "applying", "applied", {}, "applied"),
        ("fail", "applying", "failed", {}, "failed"),
        ("expire", "pending_approval", "expired", {}, "ticket_timed_out"),
        ("expire", "approved", "expired", {}, "expired"),
        ("cancel", "approved", "cancelled", {}, "cancelled"),
        ("rolled_back", "rolling_back", "rolled_back", {}, "rolled_back"),
        ("rollback_fail", "rolling_back", "rollback_failed", {}, "rollback_failed"),
        ("submit", "previewed", "approved", {}, "approved"),
        # Not notifications:
        ("preview", None, "previewed", {}, None),
        ("repreview", "pending_approval", "pending_approval", {}, None),
        ("approve", "pending_approval", "pending_approval", {}, None),
        ("apply", "approved", "applying", {}, None),
        ("takeover", "pending_approval", "pending_approval", {"next_step": 1}, None),
        ("read", None, None, {}, None),
    ],
)
def test_classify(
    action: str, before: str | None, after: str | None, data: dict[str, int], expected: str | None
) -> None:
    event = AuditEvent(
        action=action, before_state=before, after_state=after, data=data, release_number=4
    )
    assert classify(event) == expected


def test_events_without_a_release_are_never_notifications() -> None:
    event = AuditEvent(action="submit", before_state="previewed", after_state="pending_approval")
    assert classify(event) is None

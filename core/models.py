"""Imports every table so metadata (and migrations) see them all."""

from core.approvals.models import ApprovalDecision, ApprovalTicket
from core.audit.models import AccessRecord, AuditEvent, AuditHead, SinkState
from core.db import Base
from core.idempotency import IdempotencyRecord
from core.identity.models import ApiToken, Grant, Group, GroupMember, User
from core.live import LiveOutbox
from core.notify.models import NotifyDelivery, NotifyIdentity, NotifyRoute
from core.releases.models import Preview, ProgressEvent, Release
from core.targets.models import PolicyRule, Project, Service, Target

__all__ = [
    "Base",
    "AccessRecord",
    "ApiToken",
    "ApprovalDecision",
    "ApprovalTicket",
    "AuditEvent",
    "AuditHead",
    "Grant",
    "Group",
    "GroupMember",
    "IdempotencyRecord",
    "LiveOutbox",
    "NotifyDelivery",
    "NotifyIdentity",
    "NotifyRoute",
    "PolicyRule",
    "Preview",
    "ProgressEvent",
    "Project",
    "Release",
    "Service",
    "SinkState",
    "Target",
    "User",
]

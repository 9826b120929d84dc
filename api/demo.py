"""The demo world: a sandbox project and four people with fresh tokens."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from core.identity.service import ensure_user, set_grant
from core.identity.tokens import grant_token, revoke_labelled
from core.permissions import SYSTEM, Channel, Role
from core.targets.service import load_declaration, parse_declaration

DEMO_FILE = Path(__file__).with_name("demo.yaml")
DEMO_USERS = {
    "alice": "requester on shop",
    "bob": "owner and approver of shop",
    "carol": "SRE, approver everywhere",
    "victor": "viewer on shop",
    "admin": "admin",
}


def seed_demo(session: Session) -> dict[str, str]:
    """Load the demo declaration and issue new demo tokens (old ones are revoked)."""
    actor = SYSTEM.via(Channel.cli)
    load_declaration(session, actor=actor, declaration=parse_declaration(DEMO_FILE.read_text()))
    admin = ensure_user(session, "admin")
    set_grant(session, admin, Role.admin, None)
    tokens: dict[str, str] = {}
    for name in DEMO_USERS:
        user = ensure_user(session, name)
        revoke_labelled(session, actor=actor, user=user, label="demo")
        tokens[name] = grant_token(session, actor=actor, user=user, label="demo")
    session.commit()
    return tokens

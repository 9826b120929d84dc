"""The demo world: a sandbox project and four people with fresh tokens."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy.orm import Session

from core.config import Settings
from core.identity.service import ensure_user, set_grant
from core.identity.tokens import authenticate_token, grant_token, revoke_labelled
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


def seed_demo(session: Session, keep: dict[str, str] | None = None) -> dict[str, str]:
    """Load the demo declaration and issue demo tokens.

    A token in `keep` that still authenticates as its user is kept (a restarted demo prints
    the same tokens); any other demo token of that user is revoked and a new one issued.
    """
    actor = SYSTEM.via(Channel.cli)
    load_declaration(session, actor=actor, declaration=parse_declaration(DEMO_FILE.read_text()))
    admin = ensure_user(session, "admin")
    set_grant(session, admin, Role.admin, None)
    tokens: dict[str, str] = {}
    for name in DEMO_USERS:
        user = ensure_user(session, name)
        kept = (keep or {}).get(name)
        credential = authenticate_token(session, kept) if isinstance(kept, str) else None
        if kept and credential is not None and credential.actor.user_id == user.id:
            tokens[name] = kept
            continue
        revoke_labelled(session, actor=actor, user=user, label="demo")
        tokens[name] = grant_token(session, actor=actor, user=user, label="demo")
    session.commit()
    return tokens


def load_kept_tokens(settings: Settings) -> tuple[Path, dict[str, str]]:
    """Where the demo keeps its tokens (the data directory, mode 0600) and what it holds."""
    from core.audit.keys import default_data_dir

    path = default_data_dir(settings, settings.database_url) / "demo-tokens.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return path, {}
    return path, {k: v for k, v in raw.items() if isinstance(v, str)} if isinstance(
        raw, dict
    ) else {}


def save_kept_tokens(path: Path, tokens: dict[str, str]) -> None:
    """Write the demo tokens for the next start, readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(tokens, handle, indent=2)

"""API tokens: list, issue (admins), revoke. Every issue and revocation is audited."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import ActorDep, ServicesDep
from api.errors import READ, WRITE, responses
from core.db import utcnow
from core.identity.schemas import TokenCreate, TokenIssued, TokenPage, TokenRead
from core.identity.tokens import create_token, list_tokens, revoke_token
from core.ids import MAX_ID

router = APIRouter(prefix="/api/v1", tags=["identity"])
ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "No valid token."},
    403: {"description": "Only admins may do this."},
    404: {"description": "No such token or user (or not yours)."},
    422: {"description": "The request does not fit the schema."},
}


@router.get("/tokens", responses=responses(*READ))
def get_tokens(
    services: ServicesDep,
    actor: ActorDep,
    user: Annotated[str | None, Query(max_length=64, description="Only this user's.")] = None,
    include_inactive: Annotated[
        bool, Query(description="Also revoked and expired tokens.")
    ] = False,
) -> TokenPage:
    """Tokens, newest first: an admin sees everyone's, anyone else their own. No secrets."""
    with services.reads() as session:
        items = list_tokens(session, actor=actor, user=user, include_inactive=include_inactive)
    return TokenPage(items=items)


@router.post("/tokens", status_code=201, responses=responses(*WRITE))
def post_token(services: ServicesDep, actor: ActorDep, body: TokenCreate) -> TokenIssued:
    """Admins: issue a token for a user, optionally expiring; the secret is shown once."""
    expires_at = (
        utcnow() + timedelta(seconds=body.expires_in_seconds) if body.expires_in_seconds else None
    )
    with services.sessions() as session:
        token, view = create_token(
            session, actor=actor, user=body.user, label=body.label, expires_at=expires_at
        )
    return TokenIssued(token=token, details=view)


@router.post("/tokens/{token_id}/revoke", responses=responses(*WRITE))
def post_revoke(
    services: ServicesDep,
    actor: ActorDep,
    token_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> TokenRead:
    """Revoke a token (admins: anyone's; others: their own). Open chat sockets using it close."""
    with services.sessions() as session:
        view = revoke_token(session, actor=actor, token_id=token_id)
    services.identity_changed()
    return view

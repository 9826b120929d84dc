"""Sign-in: which methods are on, and OpenID Connect (authorization code + PKCE).

The browser leaves for the provider and comes back to the callback; the callback keeps a
single-use sign-in hand-off in an HttpOnly cookie and sends the browser to the console,
which trades the hand-off for an expiring API token (`POST /api/v1/auth/oidc/session`).
No token ever appears in a URL.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Cookie, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from api.deps import ServicesDep
from api.errors import WRITE, ErrorBody, responses
from api.oidc import OidcProvider
from api.wiring import Services
from core.db import utcnow
from core.errors import NotAuthenticated, NotFound
from core.identity.external import parse_role_rules, sign_in_external
from core.identity.models import User
from core.identity.tokens import consume_ticket, grant_token, issue_ticket
from core.permissions import Actor, Channel

router = APIRouter(prefix="/api/v1/auth", tags=["identity"])
STATE_COOKIE = "shipdeck_oidc"
HANDOFF_COOKIE = "shipdeck_signin"
COOKIE_PATH = "/api/v1/auth/oidc"
LOGIN_TTL = 600  # seconds a person may spend at the provider
HANDOFF_TTL = 60
# Every answer in the one error shape; 502 when the provider did not answer.
ERRORS = {
    **responses(*WRITE),
    502: {"model": ErrorBody, "description": "The provider did not answer."},
}


class AuthConfig(BaseModel):
    """How people can sign in."""

    tokens: bool = Field(default=True, description="API tokens (always).")
    oidc: bool = Field(description="OpenID Connect sign-in is configured.")
    issuer: str | None = Field(default=None, description="The OIDC provider.")


class SignedIn(BaseModel):
    """The API token of a console sign-in: keep it in the tab, never in a URL."""

    token: str
    user: str
    expires_at: str


def _provider(services: Services) -> OidcProvider:
    provider = services.oidc
    if provider is None:
        raise NotFound("OpenID Connect sign-in is not configured")
    return provider


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/config", responses=responses(401))
def auth_config(services: ServicesDep) -> AuthConfig:
    """Sign-in methods, for the console's sign-in page (no token needed)."""
    settings = services.settings
    enabled = bool(settings.oidc_issuer and settings.oidc_client_id)
    return AuthConfig(oidc=enabled, issuer=settings.oidc_issuer if enabled else None)


# Browser redirects, not API calls: kept out of the OpenAPI document.
@router.get(
    "/oidc/login", status_code=302, response_class=RedirectResponse, include_in_schema=False
)
def oidc_login(request: Request, services: ServicesDep) -> RedirectResponse:
    """Start signing in: redirect to the provider (PKCE S256, nonce, state bound to a cookie)."""
    provider = _provider(services)
    redirect_uri = services.settings.oidc_redirect_url or str(request.url_for("oidc_callback"))
    url, pending = provider.begin(redirect_uri)
    with services.sessions() as session:
        issue_ticket(
            session, purpose="oidc", ttl_seconds=LOGIN_TTL, data=pending, secret=pending["state"]
        )
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(
        STATE_COOKIE,
        pending["state"],
        max_age=LOGIN_TTL,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    return response


@router.get(
    "/oidc/callback", status_code=302, response_class=RedirectResponse, include_in_schema=False
)
def oidc_callback(
    request: Request,
    services: ServicesDep,
    code: Annotated[str | None, Query(max_length=2048)] = None,
    state: Annotated[str | None, Query(max_length=256)] = None,
    error: Annotated[str | None, Query(max_length=256)] = None,
    shipdeck_oidc: Annotated[str | None, Cookie(max_length=256)] = None,
) -> RedirectResponse:
    """The provider sends the browser back here; the account is mapped and the browser is
    sent to the console with a single-use hand-off cookie."""
    if error:
        raise NotAuthenticated(f"the provider refused the sign-in: {error[:64]}")
    if not code or not state or shipdeck_oidc != state:
        # A state that is not this browser's own is a forged or replayed callback.
        raise NotAuthenticated("this sign-in was not started in this browser; start again")
    provider = _provider(services)
    with services.sessions() as session:
        pending = consume_ticket(session, state, "oidc")
        data = dict(pending.data) if pending is not None else None
    if data is None:
        raise NotAuthenticated("this sign-in expired or was already used; start again")
    identity = provider.finish(code, data)
    rules = parse_role_rules(services.settings.oidc_group_roles)
    with services.sessions() as session:
        user = sign_in_external(
            session, identity, role_rules=rules, link_by_name=services.settings.oidc_link_by_name
        )
        session.commit()
        user_id = user.id
    with services.sessions() as session:
        handoff, _ = issue_ticket(
            session, purpose="signin", ttl_seconds=HANDOFF_TTL, data={"user_id": user_id}
        )
    services.identity_changed()  # roles may have changed for open sockets
    response = RedirectResponse("/", status_code=302)
    response.delete_cookie(STATE_COOKIE, path=COOKIE_PATH)
    response.set_cookie(
        HANDOFF_COOKIE,
        handoff,
        max_age=HANDOFF_TTL,
        path=COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    return response


@router.post("/oidc/session", responses=ERRORS)
def oidc_session(
    response: Response,
    services: ServicesDep,
    shipdeck_signin: Annotated[str | None, Cookie(max_length=256)] = None,
) -> SignedIn:
    """Trade the sign-in hand-off cookie (once) for an API token that expires."""
    if not shipdeck_signin:
        raise NotAuthenticated("no sign-in to pick up")
    with services.sessions() as session:
        used = consume_ticket(session, shipdeck_signin, "signin")
        user = session.get(User, used.data.get("user_id")) if used is not None else None
        if user is None:
            raise NotAuthenticated("this sign-in expired or was already used")
        expires_at = utcnow() + timedelta(hours=services.settings.oidc_session_hours)
        actor = Actor(user.id, user.name, {}, Channel.page)
        token = grant_token(session, actor=actor, user=user, label="oidc", expires_at=expires_at)
        session.commit()
        name = user.name
    response.delete_cookie(HANDOFF_COOKIE, path=COOKIE_PATH)
    return SignedIn(token=token, user=name, expires_at=expires_at.isoformat())

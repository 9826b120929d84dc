"""Request dependencies: the wired services and the authenticated actor."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.wiring import Services
from core.errors import NotAuthenticated
from core.identity.tokens import Credential, authenticate_token
from core.permissions import Actor, Channel

bearer = HTTPBearer(auto_error=False, description="An API token from `shipdeck users add`.")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Pages may say they are pages; only the WebSocket may say chat.
CHANNELS = {"rest": Channel.rest, "page": Channel.page}


async def get_services(request: Request) -> Services:
    """The services wired for this app."""
    services: Services = request.app.state.services
    return services


@dataclass(frozen=True)
class Bearer:
    """A request's bearer token, not checked yet, and the door it came through."""

    token: str
    channel: Channel
    request_id: str | None


async def get_bearer(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Bearer:
    """The caller's token (checked later, in the request's one thread hop)."""
    if credentials is None or not credentials.credentials:
        raise NotAuthenticated("send Authorization: Bearer <token>")
    channel = CHANNELS.get(request.headers.get("x-shipdeck-channel", "rest"), Channel.rest)
    given = Bearer(credentials.credentials, channel, request.state.request_id)
    request.state.unchecked_bearer = given  # a 422 checks it first: see api.errors
    return given


def resolve_token(services: Services, token: str) -> Credential:
    """The credential a token stands for, or NotAuthenticated (read-only: no write lock)."""
    with services.reads() as session:
        credential = authenticate_token(session, token)
    if credential is None:
        raise NotAuthenticated("the token is unknown, expired or revoked")
    return credential


# Trivial dependencies are `async def`: FastAPI runs a plain `def` one on a worker thread, a
# thread hop per dependency per request. This one reads the database, so it keeps its thread.
def get_credential(
    request: Request,
    services: Annotated[Services, Depends(get_services)],
    given: Annotated[Bearer, Depends(get_bearer)],
) -> Credential:
    """The caller's credential, its actor on the channel it came through."""
    found = resolve_token(services, given.token)
    request.state.unchecked_bearer = None
    return Credential(found.actor.via(given.channel, given.request_id), found.token_id)


async def get_actor(credential: Annotated[Credential, Depends(get_credential)]) -> Actor:
    """The authenticated caller, on the channel it came through."""
    return credential.actor


ServicesDep = Annotated[Services, Depends(get_services)]
BearerDep = Annotated[Bearer, Depends(get_bearer)]
CredentialDep = Annotated[Credential, Depends(get_credential)]
ActorDep = Annotated[Actor, Depends(get_actor)]

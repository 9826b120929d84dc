"""Request dependencies: the wired services and the authenticated actor."""

from __future__ import annotations

import re
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
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Credential:
    """The caller's credential, its actor on the channel it came through."""
    if credentials is None or not credentials.credentials:
        raise NotAuthenticated("send Authorization: Bearer <token>")
    found = resolve_token(services, credentials.credentials)
    channel = CHANNELS.get(request.headers.get("x-shipdeck-channel", "rest"), Channel.rest)
    return Credential(found.actor.via(channel, request.state.request_id), found.token_id)


async def get_actor(credential: Annotated[Credential, Depends(get_credential)]) -> Actor:
    """The authenticated caller, on the channel it came through."""
    return credential.actor


ServicesDep = Annotated[Services, Depends(get_services)]
CredentialDep = Annotated[Credential, Depends(get_credential)]
ActorDep = Annotated[Actor, Depends(get_actor)]

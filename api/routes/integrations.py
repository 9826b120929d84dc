"""Slack and Feishu/Lark interactive callbacks: approve/reject buttons decide like the inbox.

Each request is verified before anything is read from it, the pressing account is mapped to a
shipdeck user by the declared identity links, and the decision runs through the same tool
(and so the same core call) as `POST /api/v1/approvals/{id}/approve`. Refusals (self-approval,
not eligible, unknown account) are answered in the platform's own format.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from typing import Annotated, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.deps import ActorDep, ServicesDep
from api.errors import READ, error_body, responses
from api.wiring import Services
from core.errors import NotAuthenticated, ShipdeckError
from core.ids import MAX_ID
from core.notify.inbound import (
    ButtonPress,
    linked_actor,
    open_feishu,
    parse_feishu,
    parse_slack,
    verify_slack,
)
from core.notify.log import DeliveryPage, list_deliveries
from core.notify.settings import NotifySettings
from tools.registry import get_tool

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/integrations", tags=["integrations"])


class SlackReply(BaseModel):
    """Slack's message response: shown only to the person who pressed the button."""

    response_type: Literal["ephemeral", "in_channel"] = "ephemeral"
    replace_original: bool = False
    text: str


class FeishuToast(BaseModel):
    """A Feishu card-callback toast."""

    type: Literal["success", "error", "info", "warning"]
    content: str


class FeishuReply(BaseModel):
    """A Feishu callback answer: a toast after a button, or the URL-verification challenge."""

    toast: FeishuToast | None = None
    challenge: str | None = None


def _settings(request: Request) -> NotifySettings:
    settings: NotifySettings = request.app.state.notify_settings
    return settings


def _refused(exc: ShipdeckError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=401)


def _allowed(url: str, hosts: list[str]) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("https", "http") and (parts.hostname or "") in hosts


def _respond(url: str, reply: SlackReply) -> None:
    """Post the outcome to Slack's response URL (best effort: the decision stands anyway)."""
    body = reply.model_dump_json().encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310 (host allow-listed)
            pass
    except (urllib.error.URLError, OSError):
        log.warning("could not post to Slack's response URL", exc_info=True)


def _decide(services: Services, press: ButtonPress) -> tuple[bool, str]:
    """Run the decision as the linked user; (ok, what to tell them)."""
    try:
        with services.sessions() as session:
            actor = linked_actor(session, press)
        tool = "approve_release" if press.action == "approve" else "reject_release"
        note = f"via {press.platform}"
        args = {"release_id": press.release}
        args["comment" if press.action == "approve" else "reason"] = note
        result = get_tool(tool).run(services.context(actor), args)
    except ShipdeckError as exc:
        return False, exc.message
    state = getattr(result, "lifecycle_state", None) or "decided"
    verb = "approved" if press.action == "approve" else "rejected"
    return True, f"{actor.name} {verb} {press.release}: now {state}"


@router.post("/slack/actions", response_model=SlackReply, responses=responses(401, 413))
async def slack_actions(request: Request) -> JSONResponse:
    """A Slack `block_actions` callback (Approve / Reject buttons)."""
    settings = _settings(request)
    body = await request.body()
    secret = settings.slack_signing_secret
    try:
        if secret is None:
            raise NotAuthenticated("Slack callbacks are off (set SHIPDECK_SLACK_SIGNING_SECRET)")
        verify_slack(
            secret.get_secret_value(),
            body,
            request.headers.get("x-slack-request-timestamp"),
            request.headers.get("x-slack-signature"),
        )
    except NotAuthenticated as exc:
        return _refused(exc)
    try:
        press = parse_slack(body)
    except ShipdeckError as exc:
        return JSONResponse(SlackReply(text=f":warning: {exc.message}").model_dump(), 200)
    services: Services = request.app.state.services
    ok, text = await run_in_threadpool(_decide, services, press)
    reply = SlackReply(text=(":white_check_mark: " if ok else ":no_entry: ") + text)
    if press.response_url and _allowed(press.response_url, settings.slack_response_hosts):
        # Slack shows a block_actions answer only when it is posted to the response URL.
        await run_in_threadpool(_respond, press.response_url, reply)
    return JSONResponse(reply.model_dump())


@router.post("/feishu/actions", response_model=FeishuReply, responses=responses(401, 413))
async def feishu_actions(request: Request) -> JSONResponse:
    """A Feishu/Lark card callback (Approve / Reject buttons), or its URL verification."""
    settings = _settings(request)
    body = await request.body()
    token = settings.feishu_verification_token
    key = settings.feishu_encrypt_key
    try:
        if token is None:
            raise NotAuthenticated(
                "Feishu callbacks are off (set SHIPDECK_FEISHU_VERIFICATION_TOKEN)"
            )
        payload = open_feishu(
            body,
            dict(request.headers),
            token=token.get_secret_value(),
            encrypt_key=key.get_secret_value() if key else None,
        )
    except NotAuthenticated as exc:
        return _refused(exc)
    except ShipdeckError as exc:
        reply = FeishuReply(toast=FeishuToast(type="error", content=exc.message))
        return JSONResponse(reply.model_dump(exclude_none=True))
    if payload.get("type") == "url_verification":
        challenge = str(payload.get("challenge", ""))[:256]
        return JSONResponse(FeishuReply(challenge=challenge).model_dump(exclude_none=True))
    try:
        press = parse_feishu(payload)
    except ShipdeckError as exc:
        reply = FeishuReply(toast=FeishuToast(type="error", content=exc.message))
        return JSONResponse(reply.model_dump(exclude_none=True))
    services: Services = request.app.state.services
    ok, text = await run_in_threadpool(_decide, services, press)
    toast = FeishuToast(type="success" if ok else "error", content=text)
    return JSONResponse(FeishuReply(toast=toast).model_dump(exclude_none=True))


@router.get("/deliveries", response_model=DeliveryPage, responses=responses(*READ))
def deliveries(
    services: ServicesDep,
    actor: ActorDep,
    route: Annotated[str | None, Query(max_length=64)] = None,
    state: Literal["pending", "sending", "delivered", "dead"] | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> DeliveryPage:
    """The notification delivery log, newest first (admins only)."""
    with services.reads() as session:
        return list_deliveries(
            session, actor=actor, route=route, state=state, limit=limit, before=before
        )

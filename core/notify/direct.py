"""Direct messages to one person: the requester of an approval ticket that timed out.

Routes post to channels; a person who declared an identity link (`identities:` in the
declaration) is written to directly: Slack `chat.postMessage` to the user id with the app's bot
token (slack_sdk's WebClient), Feishu/Lark `im/v1/messages` to the open_id with a tenant
access token. A DM is a delivery like any other (`notify_deliveries`, route `dm:<platform>:<id>`):
it is created once per event, retried with backoff and logged.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.notify.messages import feishu_card, slack_payload
from core.notify.models import NotifyIdentity
from core.notify.notices import Notice

PREFIX = "dm:"
# The start of the error of a platform this server has no credentials for: not retried.
UNCONFIGURED = "not configured"
# Events that reach their requester directly, besides the routes.
DIRECT_EVENTS = ("ticket_timed_out",)


@dataclass(frozen=True)
class DirectConfig:
    """The platforms' API credentials and base URLs (tests point these at loopback)."""

    slack_bot_token: str | None = None
    slack_api_url: str = "https://slack.com/api/"
    feishu_app_id: str | None = None
    feishu_app_secret: str | None = None
    feishu_api_url: str = "https://open.feishu.cn/open-apis"


def dm_routes(session: Session, user_name: str) -> list[str]:
    """The DM pseudo-routes of a user: one per declared identity link (ids too long: none)."""
    links = session.scalars(
        select(NotifyIdentity)
        .where(NotifyIdentity.user_name == user_name)
        .order_by(NotifyIdentity.platform, NotifyIdentity.external_id)
    )
    names = [f"{PREFIX}{link.platform}:{link.external_id}" for link in links]
    return [name for name in names if len(name) <= 64]


def is_dm(route: str) -> bool:
    """Whether a delivery's route is a direct message."""
    return route.startswith(PREFIX)


def send_dm(route: str, notice: Notice, config: DirectConfig) -> tuple[int, str | None]:
    """Send one DM; (HTTP-like status, error or None)."""
    platform, _, external_id = route.removeprefix(PREFIX).partition(":")
    if platform == "slack":
        return _slack(external_id, notice, config)
    if platform == "feishu":
        return _feishu(external_id, notice, config)
    return 0, f"{UNCONFIGURED}: unknown platform {platform!r}"


def _slack(user_id: str, notice: Notice, config: DirectConfig) -> tuple[int, str | None]:
    if not config.slack_bot_token:
        return 0, f"{UNCONFIGURED}: SHIPDECK_SLACK_BOT_TOKEN is not set"
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    client = WebClient(token=config.slack_bot_token, base_url=config.slack_api_url, timeout=10)
    payload = slack_payload(notice)
    try:
        response = client.chat_postMessage(
            channel=user_id, text=payload["text"], blocks=payload["blocks"]
        )
    except SlackApiError as exc:
        return int(exc.response.status_code), f"slack: {exc.response.get('error')}"
    except (TimeoutError, urllib.error.URLError, OSError):
        return 0, "unreachable"
    return int(response.status_code), None


def _post_json(url: str, body: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url, data=json.dumps(body, ensure_ascii=False).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return int(exc.code), None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


def _feishu(open_id: str, notice: Notice, config: DirectConfig) -> tuple[int, str | None]:
    if not (config.feishu_app_id and config.feishu_app_secret):
        return 0, f"{UNCONFIGURED}: SHIPDECK_FEISHU_APP_ID / _APP_SECRET are not set"
    base = config.feishu_api_url.rstrip("/")
    status, answer = _post_json(
        f"{base}/auth/v3/tenant_access_token/internal",
        {"app_id": config.feishu_app_id, "app_secret": config.feishu_app_secret},
    )
    token = answer.get("tenant_access_token") if isinstance(answer, dict) else None
    if not token:
        return status or 0, "feishu: no tenant access token"
    status, answer = _post_json(
        f"{base}/im/v1/messages?receive_id_type=open_id",
        {
            "receive_id": open_id,
            "msg_type": "interactive",
            "content": json.dumps(feishu_card(notice), ensure_ascii=False),
        },
        token=str(token),
    )
    if status != 200 or not isinstance(answer, dict) or answer.get("code") != 0:
        code = answer.get("code") if isinstance(answer, dict) else None
        return status or 0, f"feishu: message refused (code {code})"
    return 200, None

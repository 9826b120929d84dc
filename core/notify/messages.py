"""Platform payloads: a signed JSON webhook, Slack Block Kit, a Feishu/Lark interactive card."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from core.notify.notices import Notice

APPROVE, REJECT = "shipdeck_approve", "shipdeck_reject"
FEISHU_COLORS = {
    "approval_needed": "orange",
    "approved": "green",
    "applied": "green",
    "rolled_back": "green",
    "rejected": "red",
    "failed": "red",
    "rollback_failed": "red",
    "ticket_timed_out": "grey",
    "expired": "grey",
    "cancelled": "grey",
}


def webhook_body(notice: Notice) -> bytes:
    """The webhook's JSON body (sorted keys, so a receiver can re-serialise it to check)."""
    return json.dumps(notice.model_dump(mode="json"), sort_keys=True, ensure_ascii=False).encode()


def sign(secret: bytes, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA-256 of the body>`, the X-Shipdeck-Signature header value."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _lines(notice: Notice) -> str:
    lines = [
        f"*{notice.release_id}* `{notice.project}/{notice.environment}`: {notice.summary}",
        f"requested by *{notice.requested_by}*; {notice.event.replace('_', ' ')} "
        f"by *{notice.actor}*",
    ]
    if notice.reason:
        lines.append(f"reason: {notice.reason}")
    return "\n".join(lines)


def slack_blocks(notice: Notice) -> list[Block]:
    """Block Kit blocks: header, facts, and approve/reject buttons when a decision waits."""
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=f"{notice.title}: {notice.release_id}"[:150])),
        SectionBlock(text=MarkdownTextObject(text=_lines(notice)[:3000])),
    ]
    buttons: list[ButtonElement] = []
    if notice.actionable:
        buttons += [
            ButtonElement(
                text="Approve", action_id=APPROVE, value=notice.release_id, style="primary"
            ),
            ButtonElement(
                text="Reject",
                action_id=REJECT,
                value=notice.release_id,
                style="danger",
                confirm=ConfirmObject(
                    title="Reject this release?",
                    text=f"{notice.release_id} will end rejected.",
                    confirm="Reject",
                    deny="Keep",
                ),
            ),
        ]
    if notice.url:
        buttons.append(ButtonElement(text="Open in shipdeck", action_id="open", url=notice.url))
    if buttons:
        blocks.append(ActionsBlock(block_id=f"shipdeck:{notice.release_id}", elements=buttons))
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=f"audit #{notice.audit_seq}")]))
    return blocks


def slack_payload(notice: Notice) -> dict[str, Any]:
    """The incoming-webhook body: fallback text plus the blocks."""
    return {"text": notice.text(), "blocks": [b.to_dict() for b in slack_blocks(notice)]}


def feishu_card(notice: Notice) -> dict[str, Any]:
    """A Feishu/Lark interactive message card (the documented `msg_type: interactive` JSON)."""
    md = _lines(notice).replace("`", "")
    elements: list[dict[str, Any]] = [{"tag": "div", "text": {"tag": "lark_md", "content": md}}]
    actions: list[dict[str, Any]] = []
    if notice.actionable:
        for action, label, style in (
            ("approve", "Approve", "primary"),
            ("reject", "Reject", "danger"),
        ):
            actions.append(
                {
                    "tag": "button",
                    "text": {"tag": "plain_text", "content": label},
                    "type": style,
                    "value": {"action": action, "release": notice.release_id},
                }
            )
    if notice.url:
        actions.append(
            {
                "tag": "button",
                "text": {"tag": "plain_text", "content": "Open in shipdeck"},
                "type": "default",
                "url": notice.url,
            }
        )
    if actions:
        elements.append({"tag": "action", "actions": actions})
    elements.append(
        {
            "tag": "note",
            "elements": [{"tag": "plain_text", "content": f"audit #{notice.audit_seq}"}],
        }
    )
    return {
        "config": {"wide_screen_mode": True, "update_multi": True},
        "header": {
            "template": FEISHU_COLORS.get(notice.event, "blue"),
            "title": {"tag": "plain_text", "content": f"{notice.title}: {notice.release_id}"},
        },
        "elements": elements,
    }


def feishu_payload(notice: Notice, secret: str | None, timestamp: int) -> dict[str, Any]:
    """The custom-bot webhook body; signed (`timestamp` + `sign`) when the bot has a secret."""
    body: dict[str, Any] = {"msg_type": "interactive", "card": feishu_card(notice)}
    if secret:
        key = f"{timestamp}\n{secret}".encode()
        body["timestamp"] = str(timestamp)
        body["sign"] = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    return body

"""Interactive callbacks from Slack and Feishu/Lark: verified, parsed, mapped to a user.

Nothing here decides: the caller passes the mapped actor to the same core decision call the
inbox uses, so self-approval, steps and permissions hold whichever button was pressed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import InvalidInput, NotAuthenticated, NotFound
from core.identity.models import User
from core.identity.service import actor_for
from core.notify.messages import APPROVE, REJECT
from core.notify.models import NotifyIdentity
from core.permissions import Actor, Channel

WINDOW = 5 * 60  # seconds a signed request stays valid (Slack's and Feishu's documented window)


@dataclass(frozen=True)
class ButtonPress:
    """Who pressed which decision button on which release, on which platform."""

    platform: str
    external_id: str
    action: str  # approve | reject
    release: str
    comment: str | None = None
    response_url: str | None = None


def _fresh(timestamp: str | None, now: float | None) -> int:
    if not timestamp or not timestamp.strip().isdigit() or len(timestamp) > 12:
        raise NotAuthenticated("the request carries no valid timestamp", reason="bad_timestamp")
    stamp = int(timestamp)
    if abs((now if now is not None else time.time()) - stamp) > WINDOW:
        raise NotAuthenticated(
            "the request timestamp is more than 5 minutes away (replayed?)", reason="stale"
        )
    return stamp


def verify_slack(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, now: float | None = None
) -> None:
    """Check Slack's v0 signature (`v0=HMAC-SHA256(secret, "v0:ts:body")`) and its window."""
    from slack_sdk.signature import SignatureVerifier

    stamp = _fresh(timestamp, now)
    expected = SignatureVerifier(secret).generate_signature(timestamp=str(stamp), body=body)
    if not signature or expected is None or not hmac.compare_digest(expected, signature):
        raise NotAuthenticated("the Slack signature does not match", reason="bad_signature")


def parse_slack(body: bytes) -> ButtonPress:
    """The button press in a Slack `block_actions` payload (form field `payload`)."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True)
        payload = json.loads(form["payload"][0])
        user = str(payload["user"]["id"])
        action = payload["actions"][0]
        action_id, value = str(action["action_id"]), str(action["value"])
        response_url = payload.get("response_url")
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise InvalidInput("not a Slack block_actions payload") from exc
    decisions = {APPROVE: "approve", REJECT: "reject"}
    if action_id not in decisions:
        raise InvalidInput(f"unknown action {action_id[:64]!r}")
    url = response_url if isinstance(response_url, str) and len(response_url) <= 2000 else None
    return ButtonPress("slack", user, decisions[action_id], value[:32], response_url=url)


def feishu_decrypt(encrypt_key: str, encrypted: str) -> dict[str, Any]:
    """Decrypt a Feishu `{"encrypt": ...}` body: AES-256-CBC, key SHA-256(encrypt key)."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    try:
        raw = base64.b64decode(encrypted, validate=True)
        if len(raw) < 32 or len(raw) % 16:
            raise ValueError("bad length")
        key = hashlib.sha256(encrypt_key.encode()).digest()
        decryptor = Cipher(algorithms.AES(key), modes.CBC(raw[:16])).decryptor()
        padded = decryptor.update(raw[16:]) + decryptor.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        plain = unpadder.update(padded) + unpadder.finalize()
        value = json.loads(plain)
    except ValueError as exc:
        raise NotAuthenticated(
            "the encrypted Feishu body does not decrypt", reason="bad_encrypt"
        ) from exc
    if not isinstance(value, dict):
        raise InvalidInput("the Feishu body is not an object")
    return value


def open_feishu(
    body: bytes,
    headers: dict[str, str],
    *,
    token: str,
    encrypt_key: str | None,
    now: float | None = None,
) -> dict[str, Any]:
    """Verify a Feishu callback and return its JSON, decrypted.

    With an encrypt key the request must carry `X-Lark-Signature` =
    SHA-256(timestamp + nonce + encrypt key + body) within the time window, and an `encrypt`
    body. Either way the verification token inside must match.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        outer = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput("the Feishu body is not JSON") from exc
    if not isinstance(outer, dict):
        raise InvalidInput("the Feishu body is not an object")
    if encrypt_key:
        stamp = _fresh(lower.get("x-lark-request-timestamp"), now)
        nonce = lower.get("x-lark-request-nonce", "")
        material = f"{stamp}{nonce}{encrypt_key}".encode() + body
        expected = hashlib.sha256(material).hexdigest()
        if not hmac.compare_digest(expected, lower.get("x-lark-signature", "")):
            raise NotAuthenticated("the Feishu signature does not match", reason="bad_signature")
        if not isinstance(outer.get("encrypt"), str):
            raise NotAuthenticated("an encrypt key is set: the body must be encrypted")
        outer = feishu_decrypt(encrypt_key, outer["encrypt"])
    header = outer.get("header") if isinstance(outer.get("header"), dict) else {}
    given = outer.get("token") or (header or {}).get("token") or ""
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
        raise NotAuthenticated("the Feishu verification token does not match", reason="bad_token")
    opened: dict[str, Any] = outer
    return opened


def parse_feishu(payload: dict[str, Any]) -> ButtonPress:
    """The button press in a card callback (schema 2.0 `card.action.trigger`, or the v1 form)."""
    try:
        if payload.get("schema") == "2.0":
            event = payload["event"]
            who = str(event["operator"]["open_id"])
            value = event["action"]["value"]
        else:
            who = str(payload["open_id"])
            value = payload["action"]["value"]
        if isinstance(value, str):
            value = json.loads(value)
        action, release = str(value["action"]), str(value["release"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput("not a Feishu card action payload") from exc
    if action not in ("approve", "reject"):
        raise InvalidInput(f"unknown action {action[:64]!r}")
    return ButtonPress("feishu", who, action, release[:32])


def linked_actor(session: Session, press: ButtonPress) -> Actor:
    """The shipdeck user a platform account is declared as, on that platform's channel."""
    link = session.get(NotifyIdentity, (press.platform, press.external_id[:128]))
    user = (
        session.scalars(select(User).where(User.name == link.user_name)).first() if link else None
    )
    if user is None:
        raise NotFound(
            f"this {press.platform} account is not linked to a shipdeck user "
            f"(declare it under identities.{press.platform})",
            reason="unknown_user",
        )
    return actor_for(user, Channel(press.platform))

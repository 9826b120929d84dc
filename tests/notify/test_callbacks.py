"""Approve/reject buttons from Slack and Feishu, genuinely signed, over HTTP to a real server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from fastapi import FastAPI
from sqlalchemy import select

from core.audit.models import AuditEvent
from core.notify.settings import NotifySettings
from tests.conftest import World
from tests.notify.test_deliveries import declare, pending
from tests.support.calls import call
from tests.support.server import running_server

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
FEISHU_TOKEN = "v-token-123"
FEISHU_KEY = "encrypt-key-456"
IDENTITIES = """
identities:
  slack: {U0BOB: bob, U0ERIN: erin, U0VIC: victor}
  feishu: {ou_bob: bob, ou_erin: erin}
"""


def _settings(encrypt: bool) -> NotifySettings:
    return NotifySettings(
        slack_signing_secret=SLACK_SECRET,
        feishu_verification_token=FEISHU_TOKEN,
        feishu_encrypt_key=FEISHU_KEY if encrypt else None,
        slack_response_hosts=["127.0.0.1"],
        notify_workers=False,
    )


def serve(world: World, encrypt: bool = False) -> Iterator[str]:
    declare(world, IDENTITIES)

    def extend(app: FastAPI) -> None:
        app.state.notify_settings = _settings(encrypt)

    with running_server(world.services, extend) as address:
        yield f"http://{address}"


@pytest.fixture
def server(world: World) -> Iterator[str]:
    yield from serve(world)


@pytest.fixture
def encrypted_server(world: World) -> Iterator[str]:
    yield from serve(world, encrypt=True)


def slack(
    base: str,
    user: str,
    action: str,
    release: str,
    *,
    secret: str = SLACK_SECRET,
    age: int = 0,
    response_url: str = "https://hooks.slack.com/actions/T0/1/x",
) -> httpx.Response:
    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower()},
        "actions": [{"action_id": action, "value": release, "type": "button"}],
        "response_url": response_url,
    }
    body = urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(time.time()) - age)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + digest.hexdigest(),
    }
    return httpx.post(f"{base}/api/v1/integrations/slack/actions", content=body, headers=headers)


def state(world: World, release: str) -> str:
    return str(call(world, "alice", "get_release", release_id=release).lifecycle_state)


def test_slack_approve_is_a_real_decision_by_the_linked_user(world: World, server: str) -> None:
    release = pending(world)
    answer = slack(server, "U0BOB", "shipdeck_approve", release)
    assert answer.status_code == 200
    assert answer.json() == {
        "response_type": "ephemeral",
        "replace_original": False,
        "text": f":white_check_mark: bob approved {release}: now approved",
    }
    assert state(world, release) == "approved"
    with world.services.sessions() as session:
        audited = session.execute(
            select(AuditEvent.actor, AuditEvent.channel).where(
                AuditEvent.action == "approve",
                AuditEvent.release_number == int(release.removeprefix("R-")),
            )
        ).all()
    assert [tuple(row) for row in audited] == [("bob", "slack")]


def test_slack_refuses_bad_signature_stale_timestamp_and_garbage(world: World, server: str) -> None:
    release = pending(world)
    forged = slack(server, "U0BOB", "shipdeck_approve", release, secret="not-the-secret")
    assert forged.status_code == 401 and "signature" in forged.json()["error"]["message"]
    stale = slack(server, "U0BOB", "shipdeck_approve", release, age=6 * 60)
    assert stale.status_code == 401 and "5 minutes" in stale.json()["error"]["message"]
    unsigned = httpx.post(f"{server}/api/v1/integrations/slack/actions", content=b"payload=%7B%7D")
    assert unsigned.status_code == 401
    huge = slack(server, "U0BOB", "shipdeck_approve", "R-" + "🚀" * 10_000)
    assert huge.status_code == 413  # the body limit holds for callbacks too
    hostile = slack(server, "U0BOB", "shipdeck_approve", "R-" + "🚀" * 2_000)
    assert hostile.status_code == 200 and hostile.json()["text"].startswith(":no_entry:")
    unknown = slack(server, "U0BOB", "drop_tables", release)
    assert unknown.status_code == 200 and "unknown action" in unknown.json()["text"]
    assert state(world, release) == "pending_approval"


def test_slack_unknown_user_and_self_approval_are_refused_in_slack_format(
    world: World, server: str
) -> None:
    release = pending(world, user="bob")
    stranger = slack(server, "U0NOBODY", "shipdeck_approve", release)
    assert stranger.status_code == 200
    assert "not linked to a shipdeck user" in stranger.json()["text"]
    own = slack(server, "U0BOB", "shipdeck_approve", release)
    assert own.status_code == 200 and own.json()["response_type"] == "ephemeral"
    assert own.json()["text"].startswith(":no_entry:") and "can never approve" in own.json()["text"]
    viewer = slack(server, "U0VIC", "shipdeck_reject", release)
    assert "approver role" in viewer.json()["text"]
    assert state(world, release) == "pending_approval"
    rejected = slack(server, "U0ERIN", "shipdeck_reject", release)
    assert rejected.json()["text"] == f":white_check_mark: erin rejected {release}: now rejected"


def feishu_v1(user: str, action: str, release: str, token: str = FEISHU_TOKEN) -> dict[str, object]:
    return {
        "open_id": user,
        "open_message_id": "om_1",
        "token": token,
        "action": {"tag": "button", "value": {"action": action, "release": release}},
    }


def test_feishu_plain_callbacks_check_the_token_and_decide(world: World, server: str) -> None:
    url = f"{server}/api/v1/integrations/feishu/actions"
    challenge = httpx.post(
        url, json={"type": "url_verification", "challenge": "abc", "token": FEISHU_TOKEN}
    )
    assert challenge.json() == {"challenge": "abc"}
    release = pending(world, user="bob")
    wrong = httpx.post(url, json=feishu_v1("ou_erin", "approve", release, token="guess"))
    assert wrong.status_code == 401
    own = httpx.post(url, json=feishu_v1("ou_bob", "approve", release))
    assert own.status_code == 200
    assert (
        own.json()["toast"]["type"] == "error"
        and "can never approve" in own.json()["toast"]["content"]
    )
    stranger = httpx.post(url, json=feishu_v1("ou_zzz", "approve", release))
    assert "not linked" in stranger.json()["toast"]["content"]
    ok = httpx.post(url, json=feishu_v1("ou_erin", "approve", release))
    assert ok.json() == {
        "toast": {"type": "success", "content": f"erin approved {release}: now approved"}
    }
    assert state(world, release) == "approved"


def encrypt(plain: dict[str, object]) -> bytes:
    key = hashlib.sha256(FEISHU_KEY.encode()).digest()
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    data = padder.update(json.dumps(plain).encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    sealed = base64.b64encode(iv + encryptor.update(data) + encryptor.finalize()).decode()
    return json.dumps({"encrypt": sealed}).encode()


def feishu_signed(
    base: str, plain: dict[str, object], *, age: int = 0, key: str = FEISHU_KEY
) -> httpx.Response:
    body = encrypt(plain)
    stamp, nonce = str(int(time.time()) - age), "n0nce"
    signature = hashlib.sha256(f"{stamp}{nonce}{key}".encode() + body).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Lark-Request-Timestamp": stamp,
        "X-Lark-Request-Nonce": nonce,
        "X-Lark-Signature": signature,
    }
    return httpx.post(f"{base}/api/v1/integrations/feishu/actions", content=body, headers=headers)


def test_feishu_encrypted_v2_callbacks(world: World, encrypted_server: str) -> None:
    release = pending(world)
    event: dict[str, object] = {
        "schema": "2.0",
        "header": {"event_type": "card.action.trigger", "token": FEISHU_TOKEN},
        "event": {
            "operator": {"open_id": "ou_bob"},
            "action": {"tag": "button", "value": {"action": "reject", "release": release}},
        },
    }
    assert feishu_signed(encrypted_server, event, key="other-key").status_code == 401
    assert feishu_signed(encrypted_server, event, age=301).status_code == 401
    plain = httpx.post(
        f"{encrypted_server}/api/v1/integrations/feishu/actions",
        json=feishu_v1("ou_bob", "approve", release),
    )
    assert plain.status_code == 401  # an encrypt key is set: plain bodies are refused
    assert state(world, release) == "pending_approval"
    done = feishu_signed(encrypted_server, event)
    assert done.json()["toast"] == {
        "type": "success",
        "content": f"bob rejected {release}: now rejected",
    }
    assert state(world, release) == "rejected"


def test_slack_gets_the_outcome_at_its_response_url_on_allowed_hosts_only(
    world: World, server: str
) -> None:
    from tests.notify.receiver import receiver

    release = pending(world, user="bob")
    with receiver() as box:
        own = slack(server, "U0BOB", "shipdeck_approve", release, response_url=f"{box.url}/r/1")
        posted = box.next()
        assert posted.path == "/r/1" and posted.json() == own.json()
        assert "can never approve" in posted.json()["text"]
        port = box.url.rsplit(":", 1)[1]
        elsewhere = f"http://localhost:{port}/r/2"  # not an allowed host: never called
        slack(server, "U0ERIN", "shipdeck_approve", release, response_url=elsewhere)
        assert state(world, release) == "approved"
        assert box.drain() == []

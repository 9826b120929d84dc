"""The audit stream: hash chain, tamper detection, what every action records."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import stat
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from api.wiring import Services
from core.audit.chain import install_keyring, keyring_of, record
from core.audit.export import archive, export, export_access
from core.audit.keys import KEY_FILE, Keyring, KeyUnavailable, load_keyring, write_key_file
from core.audit.models import AccessRecord, AuditEvent
from core.audit.service import checkpoint, rotate_key, verify
from core.audit.sink import SIGNATURE_HEADER, deliver
from core.audit.verify import Checkpoint, verify_lines
from core.config import Settings
from core.db import utcnow
from core.errors import Conflict, ShipdeckError
from core.permissions import SYSTEM, Channel
from tests.conftest import World
from tests.support.calls import call, deploy, sql


def _some_history(world: World) -> str:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "bob", "approve_release", release_id=release.id, comment="ok")
    call(world, "alice", "apply_release", release_id=release.id)
    return str(release.id)


def test_chain_verifies_and_records_actor_channel_and_states(world: World) -> None:
    release_id = _some_history(world)
    result = call(world, "admin", "verify_audit")
    assert result.ok and result.checked == result.last_seq > 5
    events = [
        e
        for e in call(world, "admin", "list_audit", release_id=release_id).items
        if e.action != "read"
    ]
    assert [(e.action, e.actor, e.before_state, e.after_state) for e in reversed(events)] == [
        ("preview", "alice", None, "previewed"),
        ("submit", "alice", "previewed", "pending_approval"),
        ("approve", "bob", "pending_approval", "approved"),
        ("apply", "alice", "approved", "applying"),
        ("applied", "system", "applying", "applied"),
    ]
    assert {e.channel for e in events} == {"rest", "system"}


def test_edited_row_is_named(world: World) -> None:
    _some_history(world)
    sql(world, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 3")
    result = call(world, "admin", "verify_audit")
    assert (result.ok, result.first_broken_seq) == (False, 3)
    assert "changed" in result.reason


def test_edited_payload_is_named(world: World) -> None:
    _some_history(world)
    with world.services.sessions() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.seq == 4)).one()
        event.data = {**event.data, "comment": "forged"}
        session.commit()
    result = call(world, "admin", "verify_audit")
    assert (result.ok, result.first_broken_seq) == (False, 4)


def test_deleted_row_is_named(world: World) -> None:
    _some_history(world)
    sql(world, "DELETE FROM audit_events WHERE seq = 2")
    result = call(world, "admin", "verify_audit")
    assert (result.ok, result.first_broken_seq) == (False, 2)
    assert "missing" in result.reason


def test_deleted_tail_is_detected(world: World) -> None:
    _some_history(world)
    last = call(world, "admin", "verify_audit").last_seq
    sql(world, "DELETE FROM audit_events WHERE seq = :s", s=last)
    result = call(world, "admin", "verify_audit")
    assert (result.ok, result.first_broken_seq) == (False, last)


def test_rechained_forgery_is_detected(world: World) -> None:
    # Rewriting a row AND re-chaining with the product's old (unkeyed) hash breaks its MAC.
    from core.audit.chain import content, legacy_hash

    _some_history(world)
    with world.services.sessions() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.seq == 2)).one()
        event.actor = "mallory"
        event.hash = legacy_hash(content(event))
        session.commit()
    result = call(world, "admin", "verify_audit")
    assert (result.ok, result.first_broken_seq) == (False, 2)


def test_refused_calls_are_recorded_and_change_no_state(world: World) -> None:
    release_id = _some_history(world)
    before = call(world, "admin", "verify_audit").last_seq
    attempts = [
        ("approve_release", {"release_id": release_id}),
        ("cancel_release", {"release_id": release_id}),
        ("submit_release", {"release_id": "R-404"}),
        ("preview_release", {"project": "shop", "environment": "prod", "changes": "web"}),
    ]
    for tool, args in attempts:
        with pytest.raises(ShipdeckError):
            call(world, "bob", tool, **args)
    new = [e for e in call(world, "admin", "list_audit").items if e.seq > before]
    refused = [e for e in new if e.action == "refused"]
    assert [e.data["tool"] for e in reversed(refused)] == [t for t, _ in attempts]
    assert all(e.actor == "bob" for e in refused)
    assert all(e.before_state is None and e.after_state is None for e in new)
    assert call(world, "admin", "verify_audit").ok
    assert call(world, "bob", "get_release", release_id=release_id).lifecycle_state == "applied"


def test_reads_are_recorded_in_the_access_log_not_the_chain(world: World) -> None:
    before = call(world, "admin", "verify_audit").last_seq
    call(world, "victor", "list_targets", project="shop")
    call(world, "victor", "list_releases", project="shop")
    assert world.services.access.flush()
    with world.services.sessions() as session:
        reads = session.scalars(select(AccessRecord).order_by(AccessRecord.id)).all()
    assert [(r.actor, r.tool, r.project) for r in reads][-2:] == [
        ("victor", "list_targets", "shop"),
        ("victor", "list_releases", "shop"),
    ]
    assert call(world, "admin", "verify_audit").last_seq == before  # no chain event per read
    assert world.services.access.flush()
    with world.services.sessions() as session:
        out = io.StringIO()
        assert export_access(session, out, since=utcnow() - timedelta(minutes=5)) >= 2
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert {"actor": "victor", "tool": "list_releases"}.items() <= lines[-2].items()


# ------------------------------------------------------------------ keys, rotation, checkpoints


def _own_services(world: World, folder: Path) -> Services:
    """Services on the same database whose key file (a copy of the world's) may be rotated."""
    with world.services.sessions() as session:
        ring = keyring_of(session)
    path = folder / KEY_FILE
    write_key_file(path, Keyring(ring.current_id, dict(ring.keys), path))
    settings = Settings(database_url=world.services.settings.database_url, data_dir=folder)
    return Services.build(settings, inline_apply=True)


def test_rotation_is_audited_and_verify_holds_across_it(world: World, tmp_path: Path) -> None:
    _some_history(world)
    own = _own_services(world, tmp_path)
    try:
        # Another process (a running server) holds the key file as it was before the rotation.
        server = Keyring(keyring_of(world.services.sessions()).current_id, {}, tmp_path / KEY_FILE)
        server.refresh()
        with own.sessions() as session:
            old = keyring_of(session).current_id
            new = rotate_key(session, actor=world.actor("admin"))
        assert new != old and server.current_id == old
        with own.sessions() as session:
            install_keyring(session, server)
            record(session, actor=world.actor("admin"), action="probe")
            session.commit()  # the server picks up the rotated file at its next write
        assert server.current_id == new
        assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
        mine = World(own, world.actors, world.tokens)
        release = deploy(mine, "alice", "shop", "dev", web={"image_tag": "9.9.9"})
        call(mine, "alice", "submit_release", release_id=release.id)
        with own.sessions() as session:
            result = verify(session)
            rows = session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
        assert result.ok, result.reason
        rotation = next(r for r in rows if r.action == "audit_key_rotated")
        assert (rotation.actor, rotation.key_id) == ("admin", old)
        assert (rotation.data["from_key"], rotation.data["to_key"]) == (old, new)
        assert {r.key_id for r in rows if r.seq > rotation.seq} == {new}
        # The old keyring alone cannot vouch for events signed after the rotation.
        stale = call(world, "admin", "verify_audit")
        assert (stale.ok, stale.first_broken_seq) == (False, rotation.seq + 1)
        with world.services.sessions() as session:  # nor may it append after them
            record(session, actor=world.actor("admin"), action="probe")
            with pytest.raises(Conflict, match="does not hold"):
                session.commit()
    finally:
        own.close()


def test_key_file_is_private_and_keys_are_never_printed(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", data_dir=tmp_path / "d")
    ring = load_keyring(settings)
    path = tmp_path / "d" / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyring(settings) is ring  # generated once
    assert all(k.hex() not in repr(ring) and repr(k) not in repr(ring) for k in ring.keys.values())
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / KEY_FILE).write_text(path.read_text())
    (shared / KEY_FILE).chmod(0o644)
    with pytest.raises(KeyUnavailable, match="readable by others"):
        load_keyring(Settings(database_url=settings.database_url, data_dir=shared))
    with pytest.raises(KeyUnavailable, match="at least 32"):
        load_keyring(Settings(audit_key=SecretStr("short")))
    with pytest.raises(KeyUnavailable, match="does not exist"):
        load_keyring(Settings(data_dir=tmp_path / "none"), create=False)


def test_checkpoint_proves_the_past_and_the_cut(world: World) -> None:
    _some_history(world)
    with world.services.sessions() as session:
        cp = checkpoint(session)
        assert verify(session, checkpoint=cp).checkpoint_seq == cp.seq
        forged = cp.model_copy(update={"seq": cp.seq + 5})
        assert "signature" in (verify(session, checkpoint=forged).reason or "")


# ------------------------------------------------------------------ export and retention


def test_export_verifies_on_its_own_and_tampering_shows(world: World, tmp_path: Path) -> None:
    _some_history(world)
    with world.services.sessions() as session:
        cp = checkpoint(session)
        ring = keyring_of(session)
        out = io.StringIO()
        count = export(session, out, fmt="jsonl")
        as_csv = io.StringIO()
        export(session, as_csv, fmt="csv")
    lines = out.getvalue().splitlines()
    assert count == len(lines) == cp.seq
    assert verify_lines(lines, ring, checkpoint=cp).ok
    rows = list(csv.DictReader(io.StringIO(as_csv.getvalue())))
    assert [int(r["seq"]) for r in rows] == list(range(1, cp.seq + 1))
    assert set(rows[0]) >= {"prev_hash", "hash", "key_id", "release_id"}
    edited = [line.replace('"actor":"bob"', '"actor":"eve"') for line in lines]
    assert not verify_lines(edited, ring, checkpoint=cp).ok
    assert not verify_lines(lines[:-2], ring, checkpoint=cp).ok  # cut after the checkpoint
    assert not verify_lines(lines[:2] + lines[3:], ring, checkpoint=cp).ok  # a row taken out
    assert verify_lines(lines[1:], ring, checkpoint=cp).base_seq == 1  # a range export holds


def test_archive_keeps_verify_whole_across_the_cut(world: World, tmp_path: Path) -> None:
    _some_history(world)
    with world.services.sessions() as session:
        early = checkpoint(session)
    cut_at = utcnow()
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.6.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    with world.services.sessions() as session:
        result = archive(session, actor=world.actor("admin"), before=cut_at, directory=tmp_path)
    assert result is not None and result.first_seq == 1 and result.last_seq == early.seq
    call(world, "bob", "approve_release", release_id=release.id)
    with world.services.sessions() as session:
        ring = keyring_of(session)
        after = verify(session)
        assert after.ok and after.base_seq == early.seq, after.reason
        assert verify(session, checkpoint=early).ok  # the archive took its part
        assert session.scalar(select(func.min(AuditEvent.seq))) == early.seq + 1
    segment = Path(result.file).read_text().splitlines()
    cp = Checkpoint.model_validate_json(Path(result.checkpoint_file).read_text())
    assert verify_lines(segment, ring, checkpoint=cp).ok
    assert verify_lines(segment, ring, checkpoint=early).ok
    assert not verify_lines(segment[:-1], ring, checkpoint=cp).ok
    archived = [e for e in call(world, "admin", "list_audit").items if e.action == "audit_archived"]
    assert archived[0].data["last_seq"] == early.seq


# ------------------------------------------------------------------ streaming sink


class _Receiver(BaseHTTPRequestHandler):
    statuses: list[int] = []
    received: list[tuple[bytes, str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((body, self.headers[SIGNATURE_HEADER]))
        self.send_response(type(self).statuses.pop(0) if type(self).statuses else 200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_webhook_sink_signs_retries_with_backoff_and_resumes(world: World) -> None:
    _some_history(world)
    _Receiver.statuses, _Receiver.received = [500], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/audit"
    secret = b"s" * 32
    t0 = utcnow()
    try:
        with world.services.sessions() as session:
            first = deliver(session, url=url, secret=secret, batch=3, now=t0)
            assert (first.status, first.failures, first.delivered_seq) == ("failed", 1, 0)
            assert first.next_attempt_at == t0 + timedelta(seconds=2)
            early = deliver(session, url=url, secret=secret, batch=3, now=t0 + timedelta(seconds=1))
            assert early.status == "waiting" and len(_Receiver.received) == 1
            later = t0 + timedelta(seconds=3)
            sent = [deliver(session, url=url, secret=secret, batch=3, now=later) for _ in range(9)]
            ring = keyring_of(session)
    finally:
        server.shutdown()
        server.server_close()
    assert sent[0].status == "delivered" and sent[0].failures == 0 and sent[-1].status == "idle"
    events: list[dict[str, object]] = []
    for body, signature in _Receiver.received[1:]:
        assert signature == "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        events.extend(json.loads(body)["events"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert verify_lines([json.dumps(e) for e in events], ring).ok  # the SIEM can verify too


# ------------------------------------------------------------------ upgrading an unkeyed chain


def _legacy_chain(world: World, *, break_at: int | None = None) -> None:
    """Replace the stream with three events as the pre-key product wrote them (plain SHA-256)."""
    from core.audit.chain import GENESIS, content, legacy_hash
    from core.audit.models import AuditHead

    sql(world, "DELETE FROM audit_events")
    sql(world, "DELETE FROM audit_head")
    with world.services.sessions() as session:
        prev = GENESIS
        for seq in (1, 2, 3):
            event = AuditEvent(
                seq=seq,
                at=utcnow(),
                actor="old-admin",
                on_behalf_of=None,
                channel="cli",
                request_id=None,
                action="declaration_loaded",
                project=None,
                release_number=None,
                before_state=None,
                after_state=None,
                data={"n": seq},
                prev_hash=prev,
                key_id=None,
            )
            event.hash = prev = legacy_hash(content(event))
            if seq == break_at:
                event.actor = "mallory"  # edited after it was written, before the upgrade
            session.add(event)
        session.add(AuditHead(id=1, last_seq=3, last_hash=prev, count=3, base_seq=0))
        session.commit()


def test_an_intact_unkeyed_chain_is_signed_on_the_first_keyed_write(world: World) -> None:
    _legacy_chain(world)
    assert not call(world, "admin", "verify_audit").ok  # unkeyed events do not pass as signed
    deploy(world, "alice", "shop", "dev", web={"image_tag": "7.0.0"})
    result = call(world, "admin", "verify_audit")
    assert result.ok and result.last_seq == 4, result.reason


def test_a_broken_unkeyed_chain_is_never_blessed_by_the_upgrade(world: World) -> None:
    _legacy_chain(world, break_at=2)
    deploy(world, "alice", "shop", "dev", web={"image_tag": "7.0.0"})
    result = call(world, "admin", "verify_audit")
    assert (result.ok, result.first_broken_seq) == (False, 1)
    assert "not signed" in (result.reason or "")


def test_a_request_id_longer_than_its_column_still_verifies(world: World) -> None:
    """The column clips a long request id; the link is made over what is stored, so the chain
    does not report its own writes as edited (a door that let one through would have made
    every event it audited look tampered with)."""
    long = "r" * 100 + "🚀" * 10
    for request_id in (long, "x" * 64, "y" * 65):
        with world.services.sessions() as session:
            record(session, actor=SYSTEM.via(Channel.chat, request_id), action="note")
            session.commit()
    with world.services.sessions() as session:
        stored = session.scalars(
            select(AuditEvent.request_id)
            .where(AuditEvent.action == "note")
            .order_by(AuditEvent.seq)
        ).all()
        report = verify(session)
    assert all(r is not None and len(r) <= 64 for r in stored), stored
    assert stored[1] == "x" * 64  # one that fits is kept whole
    assert report.ok, report

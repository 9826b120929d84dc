"""Someone with write access to the database tries to rewrite history: every attempt is caught.

The 11 tamper scenarios of issue 10, plus a state row changed by hand, on SQLite and PostgreSQL.
The attacker has the database and the product's code, but not the server's audit key.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from core.audit.chain import canonical_json, content, keyring_of, legacy_hash, link_message
from core.audit.keys import Keyring
from core.audit.service import checkpoint, verify
from core.audit.verify import AuditVerification, Checkpoint
from tests.conftest import World
from tests.support.calls import call, deploy, sql

_tags = itertools.count(1)


def _history(world: World, releases: int = 1) -> list[str]:
    ids = []
    for _ in range(releases):
        tag = f"1.5.{next(_tags)}"
        release = deploy(world, "alice", "shop", "prod", web={"image_tag": tag})
        call(world, "alice", "submit_release", release_id=release.id)
        call(world, "bob", "approve_release", release_id=release.id, comment="ok")
        call(world, "alice", "apply_release", release_id=release.id)
        ids.append(str(release.id))
    return ids


def _verify(
    world: World, cp: Checkpoint | None = None, *, explain: bool = True
) -> AuditVerification:
    with world.services.sessions() as session:
        return verify(session, checkpoint=cp, explain=explain)


def _checkpoint(world: World) -> Checkpoint:
    with world.services.sessions() as session:
        return checkpoint(session)


def _q(world: World, statement: str) -> list[dict[str, Any]]:
    with world.services.engine.connect() as connection:
        return [dict(r) for r in connection.execute(text(statement)).mappings()]


def _rows(world: World) -> list[dict[str, Any]]:
    return _q(world, "SELECT * FROM audit_events ORDER BY seq")


def _head(world: World) -> dict[str, Any]:
    return _q(world, "SELECT * FROM audit_head WHERE id = 1")[0]


def _last(world: World) -> int:
    return int(_rows(world)[-1]["seq"])


def _set_head(world: World, head: Any) -> None:
    sql(
        world,
        "UPDATE audit_head SET last_seq = :s, last_hash = :h, key_id = :k, mac = :m WHERE id = 1",
        s=head["last_seq"],
        h=head["last_hash"],
        k=head["key_id"],
        m=head["mac"],
    )


def _rehash(world: World, seq: int, fields: dict[str, Any], digest: str) -> None:
    sql(
        world,
        "UPDATE audit_events SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s",
        a=fields["actor"],
        p=fields["prev_hash"],
        h=digest,
        s=seq,
    )


def _fields(row: Any) -> dict[str, Any]:
    class Row:
        pass

    obj = Row()
    for key, value in row.items():
        setattr(obj, key, value)
    data = obj.data  # type: ignore[attr-defined]
    if isinstance(data, str):  # SQLite hands raw JSON text to a text() query
        import json

        obj.data = json.loads(data)  # type: ignore[attr-defined]
    at = obj.at  # type: ignore[attr-defined]
    if isinstance(at, str):
        from datetime import UTC, datetime

        obj.at = datetime.fromisoformat(at).replace(tzinfo=UTC)  # type: ignore[attr-defined]
    return content(obj)


def _rechain_from(world: World, start: int, sign: Callable[[dict[str, Any]], str]) -> None:
    """Edit event `start` and re-link it and every later event with `sign`; move the head."""
    rows = _rows(world)
    prev = next(r["hash"] for r in rows if r["seq"] == start - 1)
    for row in rows:
        if row["seq"] < start:
            continue
        fields = _fields(row)
        if row["seq"] == start:
            fields["actor"] = "mallory"
        fields["prev_hash"] = prev
        prev = sign(fields)
        _rehash(world, row["seq"], fields, prev)
    sql(world, "UPDATE audit_head SET last_hash = :h WHERE id = 1", h=prev)


# ------------------------------------------------------------------ the 11 scenarios


def test_1_cut_the_tail_and_move_the_head(world: World) -> None:
    _history(world)
    last = _last(world)
    keep = _rows(world)[-3]
    sql(world, "DELETE FROM audit_events WHERE seq > :s", s=keep["seq"])
    sql(
        world,
        "UPDATE audit_head SET last_seq = :s, last_hash = :h, count = :s WHERE id = 1",
        s=keep["seq"],
        h=keep["hash"],
    )
    result = _verify(world)
    assert not result.ok and result.first_broken_seq == keep["seq"] + 1
    assert "head" in (result.reason or "")
    assert last > keep["seq"]


def test_2_delete_everything(world: World) -> None:
    _history(world)
    cp = _checkpoint(world)
    sql(world, "DELETE FROM audit_events")
    sql(world, "DELETE FROM audit_head")
    for result in (_verify(world), _verify(world, cp)):
        assert not result.ok and result.first_broken_seq == 1


def test_2b_delete_every_event_but_keep_the_head(world: World) -> None:
    _history(world)
    sql(world, "DELETE FROM audit_events")
    result = _verify(world)
    assert not result.ok and result.first_broken_seq == 1


def test_3_edit_a_row(world: World) -> None:
    _history(world)
    sql(world, "UPDATE audit_events SET data = :d WHERE seq = 4", d='{"comment": "forged"}')
    result = _verify(world)
    assert (result.ok, result.first_broken_seq) == (False, 4)
    assert "changed" in (result.reason or "")


@pytest.mark.parametrize("how", ["product_sha256", "attacker_key"])
def test_4_edit_and_rechain_with_the_products_own_hash(world: World, how: str) -> None:
    _history(world)
    if how == "product_sha256":
        _rechain_from(world, 3, legacy_hash)
    else:
        kid = _head(world)["key_id"]  # key ids are public; the key is not
        own = b"attacker" * 8

        def forge(fields: dict[str, Any]) -> str:
            fields["key_id"] = kid
            return hmac.new(own, link_message(fields), hashlib.sha256).hexdigest()

        _rechain_from(world, 3, forge)
    result = _verify(world)
    assert (result.ok, result.first_broken_seq) == (False, 3)


def test_5_delete_a_middle_row(world: World) -> None:
    _history(world)
    sql(world, "DELETE FROM audit_events WHERE seq = 3")
    result = _verify(world)
    assert (result.ok, result.first_broken_seq) == (False, 3)
    assert "missing" in (result.reason or "")


def test_6_reorder(world: World) -> None:
    _history(world)
    sql(world, "UPDATE audit_events SET seq = -1 WHERE seq = 3")
    sql(world, "UPDATE audit_events SET seq = 3 WHERE seq = 4")
    sql(world, "UPDATE audit_events SET seq = 4 WHERE seq = -1")
    result = _verify(world)
    assert (result.ok, result.first_broken_seq) == (False, 3)


def test_7_insert_a_forged_row(world: World) -> None:
    _history(world)
    head = _head(world)
    seq = head["last_seq"] + 1
    fields = {
        **_fields(_rows(world)[-1]),
        "seq": seq,
        "actor": "mallory",
        "action": "approve",
        "prev_hash": head["last_hash"],
    }
    forged = legacy_hash(fields)
    sql(
        world,
        "INSERT INTO audit_events (seq, at, actor, channel, action, data, prev_hash, hash, key_id)"
        " VALUES (:seq, :at, 'mallory', 'rest', 'approve', :data, :prev, :hash, :kid)",
        seq=seq,
        at=_rows(world)[-1]["at"],
        data=canonical_json(fields["data"]),
        prev=head["last_hash"],
        hash=forged,
        kid=head["key_id"],
    )
    sql(world, "UPDATE audit_head SET last_seq = :s, last_hash = :h WHERE id = 1", s=seq, h=forged)
    result = _verify(world)
    assert (result.ok, result.first_broken_seq) == (False, seq)


def test_8_change_the_head_only(world: World) -> None:
    _history(world)
    sql(world, "UPDATE audit_head SET last_hash = :h WHERE id = 1", h="f" * 64)
    result = _verify(world)
    assert not result.ok and "head" in (result.reason or "")


def test_9_truncate_after_a_checkpoint_replaying_an_old_head(world: World) -> None:
    # The attacker saved a genuine head row earlier, so the head signature holds after the cut.
    _history(world)
    saved = _head(world)
    _history(world)
    cp = _checkpoint(world)
    assert _verify(world, cp).ok
    sql(world, "DELETE FROM audit_events WHERE seq > :s", s=saved["last_seq"])
    _set_head(world, saved)
    # The chain alone is indistinguishable from an older database (the release tables still
    # betray it, but an attacker could trim those too): only the checkpoint kept elsewhere can tell.
    assert _verify(world, explain=False).ok
    result = _verify(world, cp, explain=False)
    assert not result.ok and result.first_broken_seq == saved["last_seq"] + 1
    assert "cut" in (result.reason or "")


def test_9b_empty_table_after_a_checkpoint(world: World) -> None:
    _history(world)
    cp = _checkpoint(world)
    sql(world, "DELETE FROM audit_events")
    sql(world, "UPDATE audit_head SET last_seq = 0, last_hash = :g, mac = NULL", g="0" * 64)
    result = _verify(world, cp)
    assert not result.ok


def test_9c_history_before_the_checkpoint_rewritten_and_resigned_head(world: World) -> None:
    _history(world)
    cp = _checkpoint(world)
    _rechain_from(world, 2, legacy_hash)
    result = _verify(world, cp)
    assert not result.ok and result.first_broken_seq == 2


def test_10_drop_the_head_row(world: World) -> None:
    _history(world)
    sql(world, "DELETE FROM audit_head")
    result = _verify(world)
    assert not result.ok and "head row is missing" in (result.reason or "")


def test_11_point_at_a_missing_database(world: World, tmp_path: Path) -> None:
    ring = _ring(world)
    url = world.services.engine.url
    if url.get_backend_name() == "sqlite":
        missing = tmp_path / "nowhere" / "shipdeck.db"
        target = make_url(f"sqlite:///{missing}")
    else:
        missing = None
        target = url.set(database="no_such_database")
    engine = create_engine(target)
    try:
        with sessionmaker(engine)() as session:
            result = verify(session, keyring=ring)
    finally:
        engine.dispose()
    assert not result.ok and result.checked == 0
    if missing is not None:
        assert not missing.exists() and not missing.parent.exists()


# ------------------------------------------------------------------ state tables vs stream


def test_release_set_to_approved_in_sql_is_reported(world: World) -> None:
    release = deploy(world, "alice", "shop", "prod", web={"image_tag": "1.5.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    assert _verify(world).ok
    sql(world, "UPDATE releases SET lifecycle_state = 'approved' WHERE number = 1")
    result = _verify(world)
    assert not result.ok and [u.release_id for u in result.unexplained] == [release.id]
    assert "pending_approval" in result.unexplained[0].reason
    from core.flows.evidence import explain_state

    with world.services.sessions() as session:
        assert "pending_approval" in (explain_state(session, release.id) or "")
    # frank works on payment only: the verdict fails for him too, naming nothing of shop's.
    seen = call(world, "frank", "verify_audit")
    assert not seen.ok and seen.unexplained == [] and release.id not in (seen.reason or "")
    assert [u.release_id for u in call(world, "alice", "verify_audit").unexplained] == [release.id]


def test_forged_approval_path_needs_the_tickets_approvals(world: World) -> None:
    # payment/prod needs an owner and an SRE; one approval is not enough even with a state row
    # and a ticket row that both say approved.
    release = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "2.0.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "frank", "approve_release", release_id=release.id)
    sql(world, "UPDATE releases SET lifecycle_state = 'approved' WHERE number = 1")
    sql(world, "UPDATE approval_tickets SET state = 'approved' WHERE release_number = 1")
    result = _verify(world)
    assert not result.ok and result.unexplained[0].release_id == release.id


def test_an_honest_history_is_explained(world: World) -> None:
    _history(world, releases=2)
    release = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "2.0.0"})
    call(world, "alice", "submit_release", release_id=release.id)
    call(world, "frank", "approve_release", release_id=release.id)
    call(world, "carol", "approve_release", release_id=release.id)
    result = _verify(world)
    assert result.ok and result.unexplained == [], result.reason


def _ring(world: World) -> Keyring:
    with world.services.sessions() as session:
        return keyring_of(session)

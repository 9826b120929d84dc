"""A token check that carries a read: one round trip, the same answers as two statements."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Select, bindparam, select

from core.db import plain_rows, utcnow
from core.flows.views import release_read, viewed_from
from core.identity.models import ApiToken
from core.identity.tokens import Credential, authenticate_token, authenticate_with, hash_token
from core.releases.models import Release
from tests.conftest import World
from tests.support import engine_events
from tests.support.calls import call, deploy, sql


def _both(
    world: World, token: str, release: str
) -> tuple[Credential | None, list[tuple[Any, ...]]]:
    with world.services.reads() as session:
        return authenticate_with(session, token, *release_read(release))


def _apart(
    world: World, token: str, release: str
) -> tuple[Credential | None, list[tuple[Any, ...]]]:
    statement, params = release_read(release)
    with world.services.reads() as session:
        return authenticate_token(session, token), [
            tuple(r) for r in plain_rows(session, statement, params)
        ]


def test_an_active_token_gets_its_credential_and_the_read_as_two_statements_would(
    world: World,
) -> None:
    pending = deploy(world, "alice", "shop", "prod", web={"image_tag": "9.1"})
    call(world, "alice", "submit_release", release_id=pending.id)  # with a ticket
    plain = deploy(world, "alice", "payment", "prod", gateway={"image_tag": "2"})
    # admin: one global grant; alice: a grant on each project (two rows, no cross product)
    for user in ("admin", "alice", "victor"):
        for release in (pending.id, plain.id):
            credential, rows = _both(world, world.tokens[user], release)
            alone, read = _apart(world, world.tokens[user], release)
            assert credential == alone, (user, release)
            assert len(rows) == 1 and viewed_from(rows) == viewed_from(read), (user, release)
    credential, _ = _both(world, world.tokens["alice"], pending.id)
    assert credential is not None and len(credential.actor.projects) == 2


def test_no_rows_for_a_token_that_is_unknown_revoked_or_expired(world: World) -> None:
    release = deploy(world, "alice", "shop", "dev", web={"image_tag": "9.2"}).id
    hostile = ["sd_" + "0" * 43, "sd_🚀" * 2_500, "x" * 10_000, "", "sd_" + "a" * 300]
    for token in hostile:
        assert _both(world, token, release) == (None, []), token[:20]
    revoked, expired = world.tokens["alice"], world.tokens["bob"]
    sql(
        world,
        "UPDATE api_tokens SET revoked_at = :t WHERE token_hash = :h",
        t=utcnow(),
        h=hash_token(revoked),
    )
    sql(
        world,
        "UPDATE api_tokens SET expires_at = :t WHERE token_hash = :h",
        t=utcnow() - timedelta(seconds=1),
        h=hash_token(expired),
    )
    for token in (revoked, expired):
        # the release is there, and is not handed to a caller who is nobody
        assert _both(world, token, release) == (None, [])
    assert _both(world, world.tokens["admin"], release)[1]


def test_a_missing_release_leaves_the_credential(world: World) -> None:
    with world.services.reads() as session:
        top = session.scalar(select(Release.number).order_by(Release.number.desc()).limit(1))
    credential, rows = _both(world, world.tokens["victor"], f"R-{(top or 0) + 1000}")
    assert credential is not None and credential.actor.name == "victor" and rows == []


def test_the_database_sends_no_release_for_an_unknown_or_revoked_token(world: World) -> None:
    # not only dropped in Python: a refusal costs one index lookup, whatever the release
    release = deploy(world, "alice", "shop", "dev", web={"image_tag": "9.3"}).id
    sent: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if "UNION ALL" in statement:
            sent.append((statement, params))

    engine = world.services.engine
    engine_events.listen(engine, "before_cursor_execute", keep)
    try:
        revoked = world.tokens["carol"]
        sql(
            world,
            "UPDATE api_tokens SET revoked_at = :t WHERE token_hash = :h",
            t=utcnow(),
            h=hash_token(revoked),
        )
        for token in ("sd_" + "0" * 43, revoked, world.tokens["admin"]):
            _both(world, token, release)
    finally:
        engine_events.remove(engine, "before_cursor_execute", keep)
    counts = []
    for statement, params in sent:
        with engine.connect() as connection:
            counts.append(len(connection.exec_driver_sql(statement, params).all()))
    assert counts == [0, 1, 2], counts  # carol's token row alone; admin's grant and the release


@pytest.mark.parametrize(
    "also",
    [
        select(ApiToken.id).limit(1),
        select(ApiToken.id).order_by(ApiToken.id),
        select(ApiToken.id).distinct(),
        select(ApiToken.id).offset(1),
        select(ApiToken.id).group_by(ApiToken.id),
        select(ApiToken.id).where(ApiToken.token_hash == bindparam("hash")),
    ],
    ids=["limit", "order", "distinct", "offset", "group", "its-own-hash"],
)
def test_a_read_the_union_would_change_is_refused(world: World, also: Select[Any]) -> None:
    with world.services.reads() as session, pytest.raises(ValueError):
        authenticate_with(session, world.tokens["admin"], also, {})

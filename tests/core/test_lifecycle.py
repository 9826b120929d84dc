"""Every allowed and every forbidden transition of the lifecycle table."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from core.audit.models import AuditEvent
from core.errors import IllegalTransition, StateChanged
from core.permissions import SYSTEM
from core.releases.lifecycle import (
    ACTIONS,
    LEGACY_STATES,
    TRANSITIONS,
    State,
    normalize_state,
    transition,
)
from core.releases.queries import load_release
from tests.conftest import World
from tests.support.calls import call, deploy, sql

ALLOWED = sorted((f.value, a, t.value) for (f, a), tos in TRANSITIONS.items() for t in tos)
FORBIDDEN = sorted(
    (s.value, a, t.value)
    for s in State
    for a in ACTIONS
    for t in State
    if t not in TRANSITIONS.get((s, a), frozenset())
)


def _release_in(world: World, state: str) -> int:
    release = deploy(world, "alice", "shop", "dev", web={"image_tag": "9.9.9"})
    number = int(release.id.removeprefix("R-"))
    sql(world, "UPDATE releases SET lifecycle_state=:s WHERE number=:n", s=state, n=number)
    return number


def _audit_count(world: World) -> int:
    with world.services.sessions() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


@pytest.mark.parametrize(("before", "action", "after"), ALLOWED)
def test_allowed_transition_writes_state_version_and_audit(
    world: World, before: str, action: str, after: str
) -> None:
    number = _release_in(world, before)
    events = _audit_count(world)
    with world.services.sessions() as session:
        release = load_release(session, number)
        version = release.version
        transition(session, release, action=action, to=State(after), actor=SYSTEM)
        session.commit()
    with world.services.sessions() as session:
        release = load_release(session, number)
        assert (release.lifecycle_state, release.version) == (after, version + 1)
        last = session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
        assert last is not None
        assert (last.action, last.before_state, last.after_state) == (action, before, after)
    assert _audit_count(world) == events + 1


def test_forbidden_transitions_raise_and_change_nothing(world: World) -> None:
    # One release per source state, every forbidden (action, target) tried on it.
    numbers = {s.value: _release_in(world, s.value) for s in State}
    events = _audit_count(world)
    for state in State:
        with world.services.sessions() as session:
            release = load_release(session, numbers[state.value])
            for before, action, after in FORBIDDEN:
                if before != state.value:
                    continue
                with pytest.raises(IllegalTransition) as raised:
                    transition(session, release, action=action, to=State(after), actor=SYSTEM)
                assert raised.value.current == before
            session.rollback()
    with world.services.sessions() as session:
        for name, number in numbers.items():
            assert load_release(session, number).lifecycle_state == name
    assert _audit_count(world) == events
    assert len(FORBIDDEN) > 1000


def test_stale_version_is_refused_with_current_state(world: World) -> None:
    number = _release_in(world, "approved")
    with world.services.sessions() as first, world.services.sessions() as second:
        a = load_release(first, number)
        first.commit()
        b = load_release(second, number)
        second.commit()
        transition(first, a, action="apply", to=State.applying, actor=SYSTEM)
        first.commit()
        # a lost compare-and-set: the release changed under the call (not an illegal move)
        with pytest.raises(StateChanged) as raised:
            transition(second, b, action="apply", to=State.applying, actor=SYSTEM)
        assert raised.value.current == "applying"
        assert raised.value.code == "state_changed"


@pytest.mark.parametrize(("legacy", "state"), sorted(LEGACY_STATES.items()))
def test_legacy_states_read_as_lifecycle_vocabulary(
    world: World, legacy: str, state: State
) -> None:
    number = _release_in(world, legacy)
    got = call(world, "alice", "get_release", release_id=f"R-{number}")
    assert got.lifecycle_state == state.value
    assert normalize_state(legacy) == state

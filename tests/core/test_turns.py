"""Turns (core/turns.py): at most N request threads at once, in arrival order; a thread that
waits on a runtime steps out of its turn and comes back without queueing."""

from __future__ import annotations

import threading

from core.errors import RuntimeFailure
from core.targets.service import call_runtime
from core.turns import Turns, stepped_out
from runtimes.base import RuntimeUnavailable


def _until(predicate: object, timeout: float = 10) -> bool:
    changed = threading.Event()
    for _ in range(int(timeout * 1000)):
        if predicate():  # type: ignore[operator]
            return True
        changed.wait(0.001)
    return False


def _crowd(size: int, callers: int) -> tuple[list[int], int]:
    """`callers` threads arriving one by one at `size` turns: the order they got in, and the
    most that were in at once."""
    turns = Turns(size)
    gate = threading.Event()
    entered: list[int] = []
    inside = [0, 0]  # now, most
    lock = threading.Lock()

    def work(n: int) -> None:
        with lock:
            entered.append(n)
            inside[0] += 1
            inside[1] = max(inside)
        gate.wait(10)
        with lock:
            inside[0] -= 1

    threads = []
    for n in range(callers):
        thread = threading.Thread(target=turns.run, args=(lambda n=n: work(n),))
        thread.start()
        threads.append(thread)
        # one by one: each arrives once the last is in or queued
        assert _until(lambda n=n: turns.running + turns.waiting == n + 1)
    assert turns.running == size and turns.waiting == callers - size
    gate.set()
    for thread in threads:
        thread.join(10)
    assert turns.running == 0 and turns.waiting == 0
    return entered, inside[1]


def test_turns_are_taken_in_arrival_order_and_never_by_more_than_their_size() -> None:
    entered, most = _crowd(1, 5)
    assert entered == [0, 1, 2, 3, 4] and most == 1
    entered, most = _crowd(3, 8)
    assert sorted(entered) == list(range(8)) and most == 3


def test_a_thread_waiting_on_a_runtime_gives_its_turn_back_and_returns_at_once() -> None:
    turns = Turns(1)
    stepped, back, holder_done = threading.Event(), threading.Event(), threading.Event()

    def slow_call() -> str:
        def runtime() -> str:
            stepped.set()
            back.wait(10)  # a slow cluster
            return "planned"

        return call_runtime("plan the change", runtime)

    answers: list[str] = []
    slow = threading.Thread(target=lambda: answers.append(turns.run(slow_call)))
    slow.start()
    assert stepped.wait(10)
    assert turns.running == 0  # the turn is free while the runtime is slow
    # Another call takes it and waits for something the slow one does once back (a row lock
    # it holds, say): the slow one must come back without queueing, or both wait forever.
    other = threading.Thread(target=turns.run, args=(lambda: holder_done.wait(10),))
    other.start()
    assert _until(lambda: turns.running == 1)
    back.set()
    slow.join(10)
    assert answers == ["planned"] and not slow.is_alive()
    holder_done.set()
    other.join(10)
    assert turns.running == 0 and turns.waiting == 0


def test_a_runtime_failure_still_returns_the_turn() -> None:
    turns = Turns(1)

    def failing() -> None:
        def runtime() -> None:
            raise RuntimeUnavailable("connection refused")

        call_runtime("read the live state", runtime)

    try:
        turns.run(failing)
    except RuntimeFailure as exc:
        assert "could not read the live state" in str(exc)
    assert turns.running == 0
    assert turns.run(lambda: "next") == "next"


def test_stepping_out_without_a_turn_changes_nothing() -> None:
    with stepped_out():
        pass
    turns = Turns(1)
    assert turns.run(lambda: turns.running) == 1


def test_a_thread_in_a_turn_that_asks_again_keeps_its_turn() -> None:
    turns = Turns(1)

    def nested() -> str:
        inner = turns.run(lambda: "inner")  # would wait behind itself forever
        with stepped_out():  # the outer call still steps out afterwards
            free_while_out = turns.running == 0
        return f"{inner} {free_while_out}"

    done: list[str] = []
    worker = threading.Thread(target=lambda: done.append(turns.run(nested)))
    worker.start()
    worker.join(10)
    assert done == ["inner True"]
    assert turns.running == 0


def test_a_thread_that_holds_nothing_queues_again_on_its_way_back() -> None:
    """An LLM planner waiting on its model holds no locks: back, it queues behind those who
    arrived meanwhile instead of going over the limit."""
    turns = Turns(1)
    out, back, other_done = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def planner() -> None:
        with stepped_out(holds_nothing=True):
            out.set()
            back.wait(10)  # the model answering
        order.append("planner")

    def other() -> None:
        order.append("other")
        other_done.wait(10)

    first = threading.Thread(target=turns.run, args=(planner,))
    first.start()
    assert out.wait(10) and turns.running == 0
    second = threading.Thread(target=turns.run, args=(other,))
    second.start()
    assert _until(lambda: order == ["other"])
    back.set()
    assert _until(lambda: turns.waiting == 1)  # queued, not over the limit
    assert turns.running == 1 and order == ["other"]
    other_done.set()
    first.join(10)
    second.join(10)
    assert order == ["other", "planner"]
    assert turns.running == 0 and turns.waiting == 0


def test_a_failure_while_stepped_out_still_returns_the_turn() -> None:
    turns = Turns(1)
    for holds_nothing in (False, True):

        def failing(holds_nothing: bool = holds_nothing) -> None:
            with stepped_out(holds_nothing=holds_nothing):
                raise TimeoutError("the model did not answer")

        try:
            turns.run(failing)
        except TimeoutError:
            pass
        assert turns.running == 0 and turns.waiting == 0
        assert turns.run(lambda: turns.running) == 1


def test_a_wait_for_a_turn_is_measured_and_seen_while_it_lasts() -> None:
    from prometheus_client import REGISTRY

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    count, total = "shipdeck_turn_wait_seconds_count", "shipdeck_turn_wait_seconds_sum"
    before = {name: sample(name) for name in (count, total, "shipdeck_turns_waiting")}
    turns = Turns(1)
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        inside.set()
        leave.wait(10)

    holder = threading.Thread(target=turns.run, args=(hold,))
    holder.start()
    assert inside.wait(10)
    waiter = threading.Thread(target=turns.run, args=(lambda: None,))
    waiter.start()
    assert _until(lambda: turns.waiting == 1)
    assert sample("shipdeck_turns_waiting") == before["shipdeck_turns_waiting"] + 1
    leave.set()
    holder.join(10)
    waiter.join(10)
    assert sample("shipdeck_turns_waiting") == before["shipdeck_turns_waiting"]
    assert sample(count) == before[count] + 2  # the one that got in at once counts too
    assert sample(total) > before[total]

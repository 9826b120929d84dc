"""The apply runner: drives a claimed `applying` release through its runtime, exactly once.

A release in `applying` is the job. Its claim (`claimed_by`, `lease_expires_at`) is taken by
compare-and-set and kept alive by this process's heartbeat (every lease/3, against the
database's clock, never each replica's own). A job this process still runs is never reclaimed
by its own sweeper; when a replica dies its lease runs out and another replica's sweeper takes
the job. Every write of a job is fenced by the claim: a worker that lost it stops and writes
nothing. Whatever goes wrong, a job ends `applied` or `failed` with a short reason.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import db_now, retrying
from core.errors import Conflict, IllegalTransition
from core.events import queue_event
from core.flows.apply import apply_next, preview_plan
from core.flows.expiry import ExpirySweep
from core.ids import release_id
from core.live import prune_outbox
from core.metrics import SWEEP_FAILURES, SWEEP_SECONDS
from core.permissions import SYSTEM
from core.releases.lifecycle import State, release_event, transition
from core.releases.locks import lock_releases
from core.releases.models import ProgressEvent, Release
from core.releases.queries import current_preview, load_release
from core.targets.service import target_ref
from core.text import clip, first_line
from core.turns import stepped_out
from runtimes.base import ApplyResult, Plan, Progress
from runtimes.registry import RuntimeRegistry

log = logging.getLogger(__name__)
REASON_LIMIT = 2000


class LostClaim(Exception):
    """This worker no longer holds the release's claim: stop, write nothing."""


class ApplyRunner:
    """Runs apply jobs in a small thread pool (or inline), with heartbeats and recovery."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        runtimes: RuntimeRegistry,
        *,
        lease_seconds: float = 60,
        inline: bool = False,
        workers: int = 4,
    ) -> None:
        self.sessions = sessions
        self.runtimes = runtimes
        self.lease_seconds = lease_seconds
        self.worker_id = f"worker-{uuid.uuid4().hex[:12]}"
        self._inline = inline
        self._pool = None if inline else ThreadPoolExecutor(workers, "shipdeck-apply")
        self._futures: set[Future[None]] = set()
        self._lock = threading.Lock()
        # Jobs this process runs now -> set when their claim was lost.
        self._jobs: dict[int, threading.Event] = {}
        self._stop = threading.Event()
        self._expiry = ExpirySweep()
        self._closing = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._heart: threading.Thread | None = None

    @property
    def lease(self) -> timedelta:
        """How long a claim lasts without a heartbeat."""
        return timedelta(seconds=self.lease_seconds)

    def running(self) -> set[int]:
        """Release numbers whose apply runs in this process now."""
        with self._lock:
            return set(self._jobs)

    def start(self, number: int, planned: tuple[Plan, str] | None = None) -> None:
        """Run the apply job of a release (claimed by this worker, or with a lapsed lease).

        `planned` (plan, runtime) comes from the apply call that has just committed this
        worker's claim with the release's move to `applying`: the job then neither claims
        again nor reads the plan back (two transactions before `compose up`).
        """
        with self._lock:
            if number in self._jobs:  # never drive one release twice from one process
                return
            self._jobs[number] = threading.Event()
        self._ensure_heartbeat()
        if self._pool is None:
            self._guarded_run(number, planned)
            return
        future = self._pool.submit(self._guarded_run, number, planned)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def drain(self, timeout: float = 30) -> None:
        """Wait for the jobs started so far (tests, shutdown)."""
        with self._lock:
            pending = set(self._futures)
        wait(pending, timeout=timeout)

    # ------------------------------------------------------------ claim and heartbeat

    def _claim(self, number: int) -> bool:
        return retrying(lambda: self._claim_once(number), what=f"claiming {release_id(number)}")

    def _claim_once(self, number: int) -> bool:
        with self.sessions() as session, session.begin():
            now = db_now(session)
            result = session.execute(
                update(Release)
                .where(
                    Release.number == number,
                    Release.lifecycle_state == State.applying.value,
                    or_(
                        Release.claimed_by == self.worker_id,
                        Release.lease_expires_at.is_(None),
                        Release.lease_expires_at < now,
                    ),
                )
                .values(claimed_by=self.worker_id, lease_expires_at=now + self.lease)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1  # type: ignore[attr-defined, no-any-return]

    def _renew(self, session: Session, number: int) -> bool:
        """Extend this worker's claim on `number` in the caller's transaction."""
        result = session.execute(
            update(Release)
            .where(
                Release.number == number,
                Release.lifecycle_state == State.applying.value,
                Release.claimed_by == self.worker_id,
            )
            .values(lease_expires_at=db_now(session) + self.lease)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1  # type: ignore[attr-defined, no-any-return]

    def heartbeat(self) -> None:
        """Renew the claim of every job this process runs; flag the ones it lost."""
        with self._lock:
            jobs = dict(self._jobs)
        if not jobs:
            return

        def beat() -> list[int]:
            with self.sessions() as session, session.begin():
                # ascending, as every writer locks release rows (core.releases.locks)
                return [n for n in sorted(jobs) if not self._renew(session, n)]

        for number in retrying(beat, what="renewing the apply claims"):
            jobs[number].set()
            log.warning("%s: claim lost; its worker stops", release_id(number))

    def _ensure_heartbeat(self) -> None:
        if self._inline:
            return  # an inline apply renews on progress; tests drive it synchronously
        with self._lock:
            if self._heart is not None and self._heart.is_alive():
                return
            self._heart = threading.Thread(target=self._beat, name="shipdeck-heart", daemon=True)
            self._heart.start()

    def _beat(self) -> None:
        while not self._closing.wait(self.lease_seconds / 3):
            try:
                self.heartbeat()
            except Exception:  # the database blinked: the next beat retries
                log.exception("apply heartbeat failed")
            with self._lock:
                if not self._jobs:
                    self._heart = None
                    return

    # ------------------------------------------------------------ the job

    def _guarded_run(self, number: int, planned: tuple[Plan, str] | None = None) -> None:
        try:
            self.run(number, planned)
        except Exception:  # run() ends every job itself; this is the last line of defence
            log.exception("apply job of %s crashed", release_id(number))
        finally:
            with self._lock:
                self._jobs.pop(number, None)
        self.hand_off(number)

    def hand_off(self, number: int) -> None:
        """A job ended: start the next release waiting in its target's apply queue, if any."""
        try:
            # apply_next reads the queue afresh each time: running it again after the
            # database rolled it back starts what is still waiting, once
            retrying(
                lambda: self._next_of(number), what=f"handing on the target of {release_id(number)}"
            )
        except Exception:  # the queue waits for the next sweep
            log.exception("handing the target of %s to its queue failed", release_id(number))

    def _next_of(self, number: int) -> None:
        with self.sessions() as session:
            target_id = session.scalars(
                select(Release.target_id).where(Release.number == number)
            ).one()
            apply_next(session, runner=self, target_id=target_id)

    def advance_queues(self) -> int:
        """Start the head of every free target's apply queue (after a crash). Returns count."""
        with self.sessions() as session:
            targets = session.scalars(
                select(Release.target_id)
                .where(
                    Release.lifecycle_state == State.approved.value,
                    Release.queued_at.is_not(None),
                )
                .distinct()
            ).all()
            started = [apply_next(session, runner=self, target_id=t) for t in targets]
        return sum(1 for s in started if s is not None)

    def run(self, number: int, planned: tuple[Plan, str] | None = None) -> None:
        """Claim the job, apply through the runtime, record applied or failed."""
        with self._lock:
            lost = self._jobs.setdefault(number, threading.Event())
        if planned is None and not self._claim(number):
            return
        try:
            plan, runtime = planned or self._plan(number)
            # An inline apply runs in the caller's thread: a rollout takes minutes, and no
            # database work may wait behind it (progress writes in its own transactions).
            with stepped_out():
                result = self.runtimes.get(runtime).apply(plan, self._progress(number, lost))
        except LostClaim:
            log.warning("%s: stopped, another worker holds the claim", release_id(number))
            return
        except Exception as exc:  # the runtime's failure is the release's failure, not ours
            log.exception("apply of %s raised", release_id(number))
            result = ApplyResult(ok=False, reason=f"{type(exc).__name__}: {exc}")
        if lost.is_set():
            log.warning("%s: finished after losing the claim; result dropped", release_id(number))
            return
        self._finish(number, result)

    def _plan(self, number: int) -> tuple[Plan, str]:
        with self.sessions() as session:
            release = load_release(session, number)
            preview = current_preview(session, number)
            if preview is None:  # cannot happen through core; fail loudly rather than hang
                raise ValueError("release has no preview")
            return preview_plan(target_ref(release.target), preview), release.target.runtime

    def _progress(self, number: int, lost: threading.Event) -> Progress:
        def progress(service: str | None, level: str, message: str) -> None:
            if lost.is_set():
                raise LostClaim(release_id(number))
            # A progress line the database rolled back is written again: left to fail, it
            # would fail the apply itself (the runtime sees the error).
            if not retrying(
                lambda: self._note(number, service, level, message),
                what=f"writing progress of {release_id(number)}",
            ):
                lost.set()
                raise LostClaim(release_id(number))

        return progress

    def _note(self, number: int, service: str | None, level: str, message: str) -> bool:
        """One progress line, under this worker's claim; False when the claim is lost."""
        with self.sessions() as session, session.begin():
            if not self._renew(session, number):
                return False
            session.add(
                ProgressEvent(release_number=number, service=service, level=level, message=message)
            )
            release = load_release(session, number)
            queue_event(
                session,
                release_event(
                    release,
                    "progress",
                    {"service": service, "level": level, "message": clip(message, 1000)},
                ),
            )
            return True

    def _finish(self, number: int, result: ApplyResult) -> None:
        reason = clip(result.reason, REASON_LIMIT) if result.reason else None
        try:
            self._record_end(number, result, reason)
        except (Conflict, IllegalTransition):
            log.warning("%s: not finished here: its claim moved on", release_id(number))
        except Exception:  # never leave the job applying: record the failure with less data
            log.exception("recording the end of %s failed", release_id(number))
            short = ApplyResult(ok=False, reason="recording the apply result failed")
            self._record_end(number, short, short.reason)

    def _record_end(self, number: int, result: ApplyResult, reason: str | None) -> None:
        retrying(
            lambda: self._record_end_once(number, result, reason),
            what=f"recording the end of {release_id(number)}",
        )
        log.info(
            "%s %s%s",
            release_id(number),
            "applied" if result.ok else "failed",
            f": {first_line(reason)}" if reason else "",
        )

    def _record_end_once(self, number: int, result: ApplyResult, reason: str | None) -> None:
        applied = {k: v.model_dump() for k, v in result.applied.items()} if result.ok else None
        with self.sessions() as session:
            release = load_release(session, number)
            # A rollback's end moves the release it undid too (core.flows.rollback): both
            # rows are locked first, ascending, as every writer locks release rows.
            found = lock_releases(session, [number, *filter(None, [release.rollback_of])])
            release = next(r for r in found if r.number == number)
            transition(
                session,
                release,
                action="applied" if result.ok else "fail",
                to=State.applied if result.ok else State.failed,
                actor=SYSTEM,
                data={"reason": first_line(reason)} if reason else {},
                values={
                    "applied_spec": applied,
                    "reason": reason,
                    "claimed_by": None,
                    "lease_expires_at": None,
                },
                claimed_by=self.worker_id,
            )
            session.commit()

    # ------------------------------------------------------------ recovery

    def recover(self) -> int:
        """Take over applying releases whose lease ran out (their replica died). Returns count."""
        mine = self.running()
        with self.sessions() as session:
            now = db_now(session)
            numbers = session.scalars(
                select(Release.number).where(
                    Release.lifecycle_state == State.applying.value,
                    or_(Release.lease_expires_at.is_(None), Release.lease_expires_at < now),
                )
            ).all()
        numbers = [n for n in numbers if n not in mine]
        for number in numbers:
            self.start(number)
        return len(numbers)

    def sweep(self) -> None:
        """One maintenance pass: expire stale previews, recover orphaned applies."""
        with SWEEP_SECONDS.time():
            try:
                with self.sessions() as session:
                    self._expiry.run(session)
                    if session.get_bind().dialect.name == "postgresql":
                        prune_outbox(session)
                        session.commit()
            except Exception:  # a failed expiry scan must not hold back recovering dead jobs
                SWEEP_FAILURES.inc()
                log.exception("sweep: expiring failed; recovering applies anyway")
            self.recover()
            self.advance_queues()

    def start_sweeper(self, interval: float = 5.0) -> None:
        """Sweep every `interval` seconds in a daemon thread until `shutdown()`."""

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.sweep()
                except Exception:  # keep sweeping; the next pass retries
                    SWEEP_FAILURES.inc()
                    log.exception("sweep failed")

        self._stop.clear()
        self._sweeper = threading.Thread(target=loop, name="shipdeck-sweeper", daemon=True)
        self._sweeper.start()

    def stop_sweeper(self) -> None:
        """Stop the sweeper thread, if running."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=10)
            self._sweeper = None

    def shutdown(self) -> None:
        """Stop sweeping and wait for running applies."""
        self.stop_sweeper()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._closing.set()

"""The apply runner: drives a claimed `applying` release through its runtime, once.

A release in `applying` is the job. Its claim (`claimed_by`, `lease_expires_at`) is taken by
compare-and-set and renewed by progress; when a replica dies its lease runs out and another
replica's sweeper reclaims the job and applies the same desired state again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.db import utcnow
from core.errors import Conflict
from core.events import queue_event
from core.flows.expiry import expire_due
from core.ids import release_id
from core.permissions import SYSTEM
from core.releases.lifecycle import State, release_event, transition
from core.releases.models import ProgressEvent, Release
from core.releases.queries import current_preview, load_release
from core.targets.service import target_ref
from runtimes.base import ApplyResult, FieldChange, Plan, Progress, ServiceSpec
from runtimes.registry import RuntimeRegistry

log = logging.getLogger(__name__)


class ApplyRunner:
    """Runs apply jobs in a small thread pool (or inline), with lease-based recovery."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        runtimes: RuntimeRegistry,
        *,
        lease_seconds: int = 60,
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
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def start(self, number: int) -> None:
        """Run the apply job of a release this worker just claimed."""
        if self._pool is None:
            self.run(number)
            return
        future = self._pool.submit(self.run, number)
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

    def _claim(self, number: int) -> bool:
        now = utcnow()
        with self.sessions() as session, session.begin():
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
                .values(
                    claimed_by=self.worker_id,
                    lease_expires_at=now + timedelta(seconds=self.lease_seconds),
                )
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1  # type: ignore[attr-defined, no-any-return]

    def run(self, number: int) -> None:
        """Claim the job, apply through the runtime, record applied or failed."""
        if not self._claim(number):
            return
        with self.sessions() as session:
            release = load_release(session, number)
            preview = current_preview(session, number)
            if preview is None:  # cannot happen through core; fail loudly rather than hang
                self._finish(number, ApplyResult(ok=False, reason="release has no preview"))
                return
            plan = Plan(
                target=target_ref(release.target),
                desired={k: ServiceSpec.model_validate(v) for k, v in preview.desired.items()},
                diff={
                    s: {f: FieldChange.model_validate(c) for f, c in d.items()}
                    for s, d in preview.diff.items()
                },
                base_fingerprint=preview.base_fingerprint,
            )
            runtime = release.target.runtime
        try:
            result = self.runtimes.get(runtime).apply(plan, self._progress(number))
        except Exception as exc:  # the runtime's failure is the release's failure, not ours
            log.exception("apply of %s raised", release_id(number))
            result = ApplyResult(ok=False, reason=f"{type(exc).__name__}: {exc}")
        self._finish(number, result)

    def _progress(self, number: int) -> Progress:
        def progress(service: str | None, level: str, message: str) -> None:
            with self.sessions() as session, session.begin():
                session.add(
                    ProgressEvent(
                        release_number=number, service=service, level=level, message=message[:4000]
                    )
                )
                release = load_release(session, number)
                release.lease_expires_at = utcnow() + timedelta(seconds=self.lease_seconds)
                queue_event(
                    session,
                    release_event(
                        release,
                        "progress",
                        {"service": service, "level": level, "message": message},
                    ),
                )

        return progress

    def _finish(self, number: int, result: ApplyResult) -> None:
        applied = {k: v.model_dump() for k, v in result.applied.items()} if result.ok else None
        with self.sessions() as session:
            release = load_release(session, number)
            try:
                transition(
                    session,
                    release,
                    action="applied" if result.ok else "fail",
                    to=State.applied if result.ok else State.failed,
                    actor=SYSTEM,
                    data={"reason": result.reason} if result.reason else {},
                    values={
                        "applied_spec": applied,
                        "reason": result.reason,
                        "claimed_by": None,
                        "lease_expires_at": None,
                    },
                )
                if release.rollback_of is not None:
                    original = load_release(session, release.rollback_of)
                    transition(
                        session,
                        original,
                        action="rolled_back" if result.ok else "rollback_fail",
                        to=State.rolled_back if result.ok else State.rollback_failed,
                        actor=SYSTEM,
                        data={"rollback_release": release_id(number)},
                    )
                session.commit()
            except Conflict:
                # Another worker finished it (our lease had lapsed): its result stands.
                session.rollback()

    def recover(self) -> int:
        """Reclaim applying releases whose lease ran out (their replica died). Returns count."""
        with self.sessions() as session:
            numbers = session.scalars(
                select(Release.number).where(
                    Release.lifecycle_state == State.applying.value,
                    or_(Release.lease_expires_at.is_(None), Release.lease_expires_at < utcnow()),
                )
            ).all()
        for number in numbers:
            self.start(number)
        return len(numbers)

    def sweep(self) -> None:
        """One maintenance pass: expire stale previews, recover orphaned applies."""
        with self.sessions() as session:
            expire_due(session)
        self.recover()

    def start_sweeper(self, interval: float = 5.0) -> None:
        """Sweep every `interval` seconds in a daemon thread until `shutdown()`."""

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.sweep()
                except Exception:  # keep sweeping; the next pass retries
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

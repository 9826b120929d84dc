"""`shipdeck serve` streaming the audit chain in-process (SHIPDECK_AUDIT_STREAM_IN_SERVE)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from api.wiring import Services
from core.audit.sink import Delivery, stream
from core.config import Settings

log = logging.getLogger(__name__)


def start_audit_stream(settings: Settings, services: Services) -> Callable[[], None]:
    """Start the webhook sink on a thread of this server; returns what stops it.

    The same delivery as `shipdeck audit stream` (signed, retried, each batch claimed): every
    replica may run it, one of them posts each batch. Refuses to start half-configured.
    """
    url, secret = settings.audit_webhook_url, settings.audit_webhook_secret
    if not url or secret is None:
        raise RuntimeError(
            "SHIPDECK_AUDIT_STREAM_IN_SERVE needs SHIPDECK_AUDIT_WEBHOOK_URL and "
            "SHIPDECK_AUDIT_WEBHOOK_SECRET"
        )
    stop = threading.Event()

    def report(result: Delivery) -> None:
        if result.status == "failed":  # delivered batches are in audit_sinks, not the log
            log.warning("audit stream: %s, retry at %s", result.error, result.next_attempt_at)

    def run() -> None:
        while not stop.is_set():
            try:
                stream(
                    sessions=services.sessions,
                    url=url,
                    secret=secret.get_secret_value().encode(),
                    stop=stop,
                    report=report,
                )
            except Exception:  # a database hiccup must not end streaming for the process
                log.exception("audit stream failed; restarting in 5 s")
                stop.wait(5)

    thread = threading.Thread(target=run, name="audit-stream", daemon=True)
    thread.start()

    def halt() -> None:
        stop.set()
        thread.join(timeout=15)

    return halt

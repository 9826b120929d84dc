"""Secrets never reach a log line: the server's loggers redact credentials in URLs."""

from __future__ import annotations

import logging
import re
from typing import Any

# Query parameters that carry a credential (OIDC's `code` and `state` included).
SECRET_PARAM = re.compile(
    r"(?i)(\b(?:token|access_token|id_token|ticket|code|state|api_key|password)=)[^&\s\"']+"
)
BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
LOGGERS = ("uvicorn.access", "uvicorn.error")  # filters do not apply to propagated records


def redact(text: str) -> str:
    """The text with credential-carrying parameters and bearer tokens replaced."""
    return BEARER.sub(r"\1[redacted]", SECRET_PARAM.sub(r"\1[redacted]", text))


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """Rewrites a record's message and string arguments before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _clean(v) for k, v in record.args.items()}
        return True


def install_redaction() -> None:
    """Put the filter on the server's loggers (once)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())

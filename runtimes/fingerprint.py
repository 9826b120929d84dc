"""The base fingerprint: a hash of the deployable live state of some services."""

from __future__ import annotations

import hashlib
import json

from runtimes.base import LiveState


def fingerprint(live: LiveState, services: list[str]) -> str:
    """SHA-256 over image, replicas and env of the named services (health excluded)."""
    payload = {
        name: live.services[name].model_dump(include={"image", "replicas", "env"})
        if name in live.services
        else None
        for name in sorted(services)
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

"""The audit chain's HMAC keys: where they come from, their ids, rotation."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from core.config import Settings
from core.errors import InvalidInput

KEY_FILE = "audit-keys.json"
MIN_KEY_CHARS = 32
_cache: dict[tuple[str, str, str], Keyring] = {}
_cache_lock = threading.Lock()


class KeyUnavailable(InvalidInput):
    """The audit key cannot be read or is unsafe to use."""


def key_id(key: bytes) -> str:
    """A short public name for a key (never the key itself)."""
    return hashlib.sha256(b"shipdeck-audit-key-id:" + key).hexdigest()[:16]


@dataclass
class Keyring:
    """The current signing key and every earlier key still needed to verify."""

    current_id: str
    keys: dict[str, bytes] = field(repr=False)
    path: Path | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _stamp: int = field(default=0, repr=False, compare=False)

    def refresh(self) -> None:
        """Re-read the key file if another process (`rotate-key`) changed it."""
        if self.path is None:
            return
        try:
            stamp = self.path.stat().st_mtime_ns
        except OSError:
            return
        if stamp == self._stamp:
            return
        with self._lock:
            fresh = read_key_file(self.path)
            self.keys.update(fresh.keys)
            self.current_id = fresh.current_id
            self._stamp = stamp

    @classmethod
    def of(cls, current: bytes, *retired: bytes, path: Path | None = None) -> Keyring:
        """A keyring from raw keys, the first one signing."""
        keys = {key_id(k): k for k in (*retired, current)}
        return cls(key_id(current), keys, path)

    def mac(self, kid: str, message: bytes) -> str | None:
        """HMAC-SHA-256 of message under key `kid`, or None if that key is unknown."""
        key = self.keys.get(kid)
        if key is None:
            return None
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    def sign(self, message: bytes) -> tuple[str, str]:
        """(key id, mac) of message under the current key."""
        return self.current_id, hmac.new(self.keys[self.current_id], message, "sha256").hexdigest()

    def check(self, kid: str | None, message: bytes, mac: str | None) -> bool:
        """Whether `mac` is the HMAC of message under key `kid` (constant time)."""
        if kid is None or mac is None:
            return False
        expected = self.mac(kid, message)
        return expected is not None and hmac.compare_digest(expected, mac)

    def rotate(self) -> tuple[str, str]:
        """Generate a new signing key into the key file; returns (old id, new id)."""
        if self.path is None:
            raise KeyUnavailable(
                "the audit key comes from SHIPDECK_AUDIT_KEY: put the new key there, the old "
                "one in SHIPDECK_AUDIT_RETIRED_KEYS, and run `shipdeck audit rotate-key` again"
            )
        with self._lock:
            old = self.current_id
            new_key = secrets.token_bytes(32)
            new = key_id(new_key)
            self.keys[new] = new_key
            self.current_id = new
            write_key_file(self.path, self)
            self._stamp = self.path.stat().st_mtime_ns
        return old, new


def default_data_dir(settings: Settings, database_url: str) -> Path:
    """The data directory: the setting, the SQLite file's folder, or a per-user folder."""
    if settings.data_dir is not None:
        return settings.data_dir.expanduser()
    url = make_url(database_url)
    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
        return Path(url.database).expanduser().resolve().parent
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "shipdeck"


def load_keyring(
    settings: Settings, database_url: str | None = None, *, create: bool = True
) -> Keyring:
    """The keyring for these settings (cached per process): SHIPDECK_AUDIT_KEY or the key file.

    With `create=False` a missing key file is an error instead of a new key (verify never
    makes up a key).
    """
    url = database_url or settings.database_url
    secret = settings.audit_key.get_secret_value() if settings.audit_key else ""
    retired = settings.audit_retired_keys.get_secret_value() if settings.audit_retired_keys else ""
    folder = str(default_data_dir(settings, url)) if not secret else ""
    cache_key = (secret, retired, folder)
    with _cache_lock:
        if folder and not create and not (Path(folder) / KEY_FILE).exists():
            raise KeyUnavailable(f"no audit key: {Path(folder) / KEY_FILE} does not exist")
        if cache_key not in _cache:
            _cache[cache_key] = _load(secret, retired, folder)
        return _cache[cache_key]


def _load(secret: str, retired: str, folder: str) -> Keyring:
    if secret:
        olds = [r.strip().encode() for r in retired.split(",") if r.strip()]
        for value in (secret.encode(), *olds):
            if len(value) < MIN_KEY_CHARS:
                raise KeyUnavailable(
                    f"SHIPDECK_AUDIT_KEY and retired keys need at least {MIN_KEY_CHARS} characters"
                )
        return Keyring.of(secret.encode(), *olds)
    return read_key_file(Path(folder) / KEY_FILE)


def read_key_file(path: Path) -> Keyring:
    """The keyring stored in a key file (generated first if missing)."""
    if not path.exists():
        _create_key_file(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyUnavailable(
            f"the audit key file {path} is readable by others (mode {mode:o}); chmod 600 it"
        )
    try:
        raw = json.loads(path.read_text())
        keys = {kid: bytes.fromhex(value) for kid, value in raw["keys"].items()}
        current = str(raw["current"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyUnavailable(
            f"the audit key file {path} is unreadable: {type(exc).__name__}"
        ) from None
    if current not in keys or any(key_id(v) != k for k, v in keys.items()):
        raise KeyUnavailable(f"the audit key file {path} is inconsistent")
    return Keyring(current, keys, path, _stamp=path.stat().st_mtime_ns)


def _create_key_file(path: Path) -> None:
    # Write a private temp file, then hard-link it into place: link fails if another process
    # won the race, and then both use the winner's key.
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    ring = Keyring.of(key, path=path)
    tmp = _write_private(path.with_name(f".{path.name}.{secrets.token_hex(4)}"), ring)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def write_key_file(path: Path, ring: Keyring) -> None:
    """Replace the key file atomically with the keyring's keys (mode 0600)."""
    tmp = _write_private(path.with_name(f".{path.name}.{secrets.token_hex(4)}"), ring)
    os.replace(tmp, path)


def _write_private(tmp: Path, ring: Keyring) -> Path:
    body = json.dumps(
        {"current": ring.current_id, "keys": {k: v.hex() for k, v in ring.keys.items()}}
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp

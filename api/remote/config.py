"""Where the remote CLI finds its server and token: environment first, then a config file."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path


class ConfigError(Exception):
    """The server URL or token is missing or malformed; the message says how to set it."""


@dataclass(frozen=True)
class Remote:
    """A server URL and the token to call it with."""

    url: str
    token: str


def config_path() -> Path:
    """`$XDG_CONFIG_HOME/shipdeck/config.toml`, default `~/.config/shipdeck/config.toml`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "shipdeck" / "config.toml"


def load_remote(path: Path | None = None) -> Remote:
    """`SHIPDECK_URL` / `SHIPDECK_TOKEN`, each falling back to `url` / `token` in the file."""
    file = path or config_path()
    values: dict[str, object] = {}
    if file.exists():
        try:
            values = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file} is not valid TOML: {exc}") from exc
    url = os.environ.get("SHIPDECK_URL") or values.get("url")
    token = os.environ.get("SHIPDECK_TOKEN") or values.get("token")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(
            f'no server URL: set SHIPDECK_URL or `url = "http://127.0.0.1:8000"` in {file}'
        )
    if not isinstance(token, str) or not token.strip():
        raise ConfigError(f'no token: set SHIPDECK_TOKEN or `token = "sd_..."` in {file}')
    return Remote(url.rstrip("/"), token.strip())

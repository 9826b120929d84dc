"""A small httpx client for the REST API that turns error bodies into readable messages."""

from __future__ import annotations

from typing import Any

import httpx

from api.remote.config import Remote


class RemoteError(Exception):
    """The server refused or could not be reached; `message` is for people."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class Client:
    """Calls one shipdeck server with one token."""

    def __init__(self, remote: Remote, timeout: float = 30) -> None:
        self._http = httpx.Client(
            base_url=remote.url,
            headers={"Authorization": f"Bearer {remote.token}", "User-Agent": "shipdeck-cli"},
            timeout=timeout,
        )

    def get(self, path: str, **params: Any) -> Any:
        """GET, dropping unset query parameters."""
        clean = {k: v for k, v in params.items() if v is not None}
        return self._call("GET", path, params=clean)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST a JSON body."""
        return self._call("POST", path, json=body or {})

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise RemoteError(f"cannot reach {self._http.base_url}: {exc}") from exc
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            message = (
                error.get("message") if isinstance(error, dict) else None
            ) or f"HTTP {response.status_code}"
            raise RemoteError(str(message), response.status_code)
        return data

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

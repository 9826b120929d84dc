"""Adapters looked up by runtime name."""

from __future__ import annotations

from collections.abc import Mapping

from runtimes.base import RuntimeAdapter


class RuntimeRegistry:
    """The adapters this process can drive, keyed by runtime name."""

    def __init__(self, adapters: Mapping[str, RuntimeAdapter]) -> None:
        self._adapters = dict(adapters)

    def get(self, runtime: str) -> RuntimeAdapter:
        """The adapter for a runtime; KeyError names the runtimes available."""
        try:
            return self._adapters[runtime]
        except KeyError:
            raise KeyError(
                f"runtime {runtime!r} is not available here (have: {', '.join(self.names)})"
            ) from None

    @property
    def names(self) -> list[str]:
        """Runtime names available."""
        return sorted(self._adapters)

"""Adapters looked up by runtime name."""

from __future__ import annotations

from collections.abc import Mapping

from runtimes.base import Connection, RuntimeAdapter


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

    def connection_models(self) -> dict[str, type[Connection]]:
        """Each runtime's connection model: what a declaration may say about its targets."""
        return {name: adapter.connection_model for name, adapter in self._adapters.items()}

    def simulated(self, runtime: str) -> bool:
        """True when the runtime's adapter is simulated."""
        adapter = self._adapters.get(runtime)
        return bool(adapter is not None and adapter.simulated)

    @property
    def names(self) -> list[str]:
        """Runtime names available."""
        return sorted(self._adapters)

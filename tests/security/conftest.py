"""Security tests reuse the REST client fixture."""

from tests.api.conftest import api

__all__ = ["api"]

"""Fixtures of the security suite: the API client of tests/api, reused."""

from __future__ import annotations

from tests.api.conftest import Api, api

__all__ = ["Api", "api"]

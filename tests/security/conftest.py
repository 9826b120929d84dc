"""Fixtures of the security suite: the REST client of tests/api, a TestClient, a fast SQLite."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.config import Settings
from tests.api.conftest import Api, api
from tests.conftest import World

__all__ = ["Api", "api"]


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    settings = Settings(database_url=str(world.services.engine.url), migrate_on_start=False)
    with TestClient(create_app(settings, world.services)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def memory_sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLite file on a memory-backed file system where there is one.

    Suites here make thousands of audited calls; on disk, syncing each commit dominates.
    """
    shm = Path("/dev/shm")
    folder = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() else tmp_path_factory.mktemp("mem")
    yield f"sqlite:///{folder / 'shipdeck.db'}"
    shutil.rmtree(folder, ignore_errors=True)

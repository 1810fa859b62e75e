"""Shared fixtures: real LFW images read from ../shared (never copied into the repo)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import pg_bin, postgres_server

REPO_ROOT = Path(__file__).resolve().parents[1]


def _lfw_root() -> Path:
    # Tests may be pointed elsewhere; the service itself never reads this.
    override = os.environ.get("FACES_TEST_LFW_DIR")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data" / "lfw"


@pytest.fixture(scope="session")
def lfw_root() -> Path:
    root = _lfw_root()
    if not (root / "images").is_dir():
        pytest.fail(f"LFW not found at {root}; tests need ../shared/data/lfw beside the checkout")
    return root


@pytest.fixture(scope="session")
def lfw_image(lfw_root: Path):  # type: ignore[no-untyped-def]
    """Path of image number ``n`` of ``person`` (``lfw_image("George_W_Bush", 1)``)."""

    def _path(person: str, n: int) -> Path:
        path = lfw_root / "images" / person / f"{person}_{n:04d}.jpg"
        assert path.is_file(), path
        return path

    return _path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One throw-away PostgreSQL server for the whole run (skipped locally without the binaries,
    a failure under CI, which must never skip it silently)."""
    if pg_bin() is None:
        reason = "PostgreSQL binaries (initdb) are not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the PostgreSQL tests")
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def milvus_server() -> Iterator[object]:
    """One real Milvus 2.3.5 standalone server (PyPI wheel ``milvus``) for the whole session.

    Tests isolate themselves by Milvus collection name. Skipped locally when the wheel is missing,
    a failure on CI. Typed ``object`` here to keep this module import-light; it is a
    ``tests.milvus_server.MilvusServer``.
    """
    from tests.milvus_server import MilvusServer, free_port, require_milvus_server

    require_milvus_server()
    # Its own temp dir, not pytest's: a server must outlive any other run's basetemp rotation.
    data_dir = Path(tempfile.mkdtemp(prefix="faces-milvus-"))
    server = MilvusServer(data_dir, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

"""The Milvus test server (launcher: service/testing/milvus_server.py): skip locally, fail on CI."""

from __future__ import annotations

import os

import pytest

from service.testing.milvus_server import MilvusServer, free_port, milvus_server_bin

__all__ = ["MilvusServer", "free_port", "require_milvus_server", "require_pymilvus"]


def require_pymilvus() -> None:
    """The Milvus engine's client: skipped locally without the extra, a failure on CI (CI=true)."""
    try:
        import pymilvus  # noqa: F401
    except ImportError:
        reason = 'the Milvus engine needs pymilvus: pip install -e ".[milvus]" (or ".[dev]")'
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason, allow_module_level=True)


def require_milvus_server() -> str:
    """The launcher; a clear skip locally when it is missing, a failure on CI (CI=true)."""
    found = milvus_server_bin()
    if found is None:
        reason = 'milvus-server not installed (pip install -e ".[dev]" brings milvus==2.3.5)'
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found

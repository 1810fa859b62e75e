"""The connection to Milvus, replaced in the background after a failed call to a server.

pymilvus recovers most broken channels by itself, but a replica was once seen failing every call
for minutes after Milvus came back until it was restarted (deploy/README.md, Milvus smoke test).
The request that failed answers 503 at once; the next ones use the new client.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from pymilvus import MilvusClient, MilvusException

logger = logging.getLogger(__name__)

# After a failed call to a Milvus server, a fresh connection is opened in the background, at most this
# often: a replica must never need a restart after a Milvus outage. As often as the pending-write push
# tries the engine (FACES_INDEX_RETRY_INTERVAL_S, 1 s), so that a write stored during an outage is
# searchable about a second after Milvus serves again, not up to a whole interval later.
RECONNECT_MIN_INTERVAL_S = 1.0


class MilvusConnection:
    """The current ``MilvusClient`` (``client``), and a fresh one after a failure (``reconnect_soon``)."""

    def __init__(self, uri: str, *, token: str, db_name: str, timeout_s: float) -> None:
        self.uri = uri
        self._connect_args: dict[str, Any] = {
            "uri": uri,
            "token": token,
            "db_name": db_name,
            "timeout": timeout_s,
        }
        # A server (not a milvus-lite file) gets a connection of its own, so that a reconnect
        # really replaces it rather than handing back pymilvus' shared, possibly stale, channel.
        self._remote = "://" in uri
        if self._remote:
            self._connect_args["dedicated"] = True
        self._lock = threading.Lock()
        self._reconnecting = False
        self._last_reconnect = 0.0
        self.client = MilvusClient(**self._connect_args)

    def reconnect_soon(self, failure: MilvusException) -> None:
        """After a failed call to a server, open a fresh connection in the background."""
        if not self._remote:
            return
        with self._lock:
            now = time.monotonic()
            if self._reconnecting or now - self._last_reconnect < RECONNECT_MIN_INTERVAL_S:
                return
            self._reconnecting = True
            self._last_reconnect = now
        threading.Thread(
            target=self._reconnect, args=(failure.message,), name="milvus-reconnect", daemon=True
        ).start()

    def _reconnect(self, reason: str) -> None:
        try:
            fresh = MilvusClient(**self._connect_args)
        except Exception as exc:  # still unreachable: the next failed call tries again
            logger.warning("Milvus at %s still unreachable (%s); will retry", self.uri, exc)
            return
        finally:
            with self._lock:
                self._reconnecting = False
        stale, self.client = self.client, fresh
        with contextlib.suppress(Exception):
            stale.close()
        logger.warning("reconnected to Milvus at %s after a failed call (%s)", self.uri, reason)

    def close(self) -> None:
        self.client.close()

"""The connection to a Milvus server, with recovery we own: fail fast while it is down, a verified
fresh connection as soon as it answers again.

pymilvus 2.6 recovers a broken channel in place, under one process-wide lock, waiting up to the connect
timeout per failed call; after a Milvus restart on a busy machine those recoveries queued behind each
other and a replica kept failing for over a minute (seen in CI and in the podman smoke test). So for a
server (not a milvus-lite file) this class turns pymilvus' recovery off for its own connection and:

- bounds every call by ``call_timeout`` (pass ``**connection.call_timeout``), so pymilvus' own retries
  stop after the configured timeout instead of 75 attempts;
- after a failed call, opens the circuit: further calls fail at once (503) instead of each waiting;
- a background thread opens a fresh dedicated connection, checks it with a real request, and only
  then swaps it in and closes the circuit, retrying every ``RECONNECT_INTERVAL_S`` until it works.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

import grpc
from pymilvus import MilvusClient, MilvusException

logger = logging.getLogger(__name__)

# Everything a call to the engine raises when the engine (not the request) is at fault.
ENGINE_ERRORS: tuple[type[Exception], ...] = (MilvusException, grpc.RpcError)

# How often the background thread tries a fresh connection while Milvus does not answer: as often as
# the pending-write push tries the engine (FACES_INDEX_RETRY_INTERVAL_S, 1 s), so that a write stored
# during an outage is searchable about a second after Milvus serves again.
RECONNECT_INTERVAL_S = 0.5
# One reconnect attempt (connect, then a real request) gives up after this long: a server still
# starting can hold a request until its deadline, and the attempt after it must not start late.
RECONNECT_ATTEMPT_TIMEOUT_S = 2.0
# gRPC channel options for a server. gRPC shares subchannels between channels to the same target
# (a process-wide pool), so a "fresh" channel inherited the old one's reconnect backoff, which grows
# to minutes while Milvus is down: a replica stayed unready long after Milvus was back. Each of our
# channels gets its own subchannels, and a channel retries a lost server at least every second.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 1000),
)
# A replaced client is closed this much later, so calls still running on it can finish.
STALE_CLOSE_DELAY_S = 30.0


class MilvusConnection:
    """The current ``MilvusClient`` (``client``), and a verified fresh one after a failure."""

    def __init__(self, uri: str, *, token: str, db_name: str, timeout_s: float) -> None:
        self.uri = uri
        self._timeout_s = timeout_s
        self._connect_args: dict[str, Any] = {"uri": uri, "token": token, "db_name": db_name}
        # A server gets a connection of its own, so that a reconnect really replaces it rather than
        # handing back pymilvus' shared, possibly stale, channel.
        self._remote = "://" in uri
        if self._remote:
            self._connect_args["dedicated"] = True
            self._connect_args["grpc_options"] = dict(CHANNEL_OPTIONS)
        self._lock = threading.Lock()
        self._broken: str | None = None  # why the circuit is open; None: calls go through
        self._reconnecting = False
        self._closed = threading.Event()
        self._client = self._open(timeout_s)

    @property
    def call_timeout(self) -> dict[str, float]:
        """Keyword arguments bounding one call (pymilvus retries within it, then raises)."""
        return {"timeout": self._timeout_s} if self._remote else {}

    @property
    def client(self) -> MilvusClient:
        """The client to call; raises (a ``MilvusException``) at once while the engine is known down."""
        reason = self._broken
        if reason is not None:
            raise MilvusException(message=f"Milvus at {self.uri} is reconnecting after: {reason}")
        return self._client

    def _open(self, timeout_s: float) -> MilvusClient:
        client = MilvusClient(**self._connect_args, timeout=timeout_s)
        if self._remote:
            # Recovery is ours (module docstring): pymilvus' in-place recovery waits under a global
            # lock. pymilvus is pinned; tests/test_milvus_server.py restarts a real server.
            handler = client._get_connection()
            handler._on_rpc_error = lambda _error: False
        return client

    def reconnect_soon(self, failure: Exception) -> None:
        """After a failed call to a server: fail fast, and reconnect in the background."""
        if not self._remote or self._closed.is_set():
            return
        reason = str(getattr(failure, "message", None) or failure)
        with self._lock:
            if self._broken is None:
                self._broken = reason
            if self._reconnecting:
                return
            self._reconnecting = True
        threading.Thread(target=self._reconnect, name="milvus-reconnect", daemon=True).start()

    def _reconnect(self) -> None:
        attempts = 0
        attempt_s = min(self._timeout_s, RECONNECT_ATTEMPT_TIMEOUT_S)
        try:
            while not self._closed.is_set():
                attempts += 1
                fresh: MilvusClient | None = None
                try:
                    fresh = self._open(attempt_s)
                    fresh.get_server_version(timeout=attempt_s)  # a real request, not a socket
                except Exception as exc:
                    if fresh is not None:  # connected but not answering: its channel goes too
                        _close_quietly(fresh)
                    if attempts & (attempts - 1) == 0:  # 1, 2, 4, 8, ...: a trace without a flood
                        logger.warning(
                            "Milvus at %s unreachable (attempt %d: %s); retrying", self.uri, attempts, exc
                        )
                    self._closed.wait(RECONNECT_INTERVAL_S)
                    continue
                stale, self._client = self._client, fresh
                with self._lock:
                    reason, self._broken = self._broken, None
                timer = threading.Timer(STALE_CLOSE_DELAY_S, _close_quietly, args=(stale,))
                timer.daemon = True
                timer.start()
                logger.warning(
                    "reconnected to Milvus at %s after a failed call (%s; %d attempts)",
                    self.uri,
                    reason,
                    attempts,
                )
                return
        finally:
            with self._lock:
                self._reconnecting = False

    def close(self) -> None:
        self._closed.set()
        _close_quietly(self._client)


def _close_quietly(client: MilvusClient) -> None:
    with contextlib.suppress(Exception):
        client.close()

"""Entry point of the smoke test's Milvus image (deploy/smoke/milvus.Containerfile); smoke test only.

Runs the Milvus 2.3.5 standalone server of the PyPI wheel through service/testing/milvus_server.py (the
launcher the tests use: retried start, readiness = a real client call, a clean stop of the whole
process group) and stays in the foreground until SIGTERM/SIGINT, so ``podman stop``/``restart``
stop Milvus cleanly (its etcd sessions are revoked). Exits non-zero when the server dies.

``--check`` is the image's HEALTHCHECK: a client call against the proxy's gRPC port.
Environment: MILVUS_DATA (data dir, a volume), MILVUS_PORT (gRPC proxy port), MILVUS_TIME_TICK_MS.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from service.testing.milvus_server import MilvusServer

logger = logging.getLogger("milvus_entrypoint")


def check(uri: str) -> int:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=5)
    client.list_collections()
    client.close()
    return 0


def serve(server: MilvusServer) -> int:
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: stopping Milvus", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.data_dir.mkdir(parents=True, exist_ok=True)
    server.start(timeout_s=120.0)
    logger.info("Milvus ready on %s (data %s)", server.uri, server.data_dir)
    status = 0
    while not stopping.wait(2.0):
        process = server.process
        if process is None or process.poll() is not None or not server._binary_alive(process.pid):
            logger.error("the Milvus server exited:\n%s", server._logs())
            status = 1
            break
    server.stop(grace_s=60.0)
    logger.info("Milvus stopped")
    return status


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = MilvusServer(
        data_dir=Path(os.environ.get("MILVUS_DATA", "/var/lib/milvus")),
        port=int(os.environ.get("MILVUS_PORT", "19530")),
        time_tick_ms=int(os.environ.get("MILVUS_TIME_TICK_MS", "20")),
    )
    if sys.argv[1:] == ["--check"]:
        return check(server.uri)
    return serve(server)


if __name__ == "__main__":
    sys.exit(main())

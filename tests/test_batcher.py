"""The dynamic batcher groups concurrent requests and routes every row back to its caller."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from numpy.typing import NDArray

from service.runtime.batcher import EmbeddingBatcher


class RecordingEmbedder:
    """Deterministic stand-in: the embedding encodes each crop's first pixel, so rows are traceable."""

    dim = 4
    input_size = (8, 8)

    def __init__(self, delay: float = 0.01) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def embed(self, crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        with self.lock:
            self.calls.append(len(crops))
        time.sleep(self.delay)
        out = np.zeros((len(crops), self.dim), dtype=np.float32)
        out[:, 0] = crops[:, 0, 0, 0]
        out[:, 1] = 1.0
        return out


def crops_marked(values: list[int]) -> NDArray[np.uint8]:
    crops = np.zeros((len(values), 8, 8, 3), dtype=np.uint8)
    crops[:, 0, 0, 0] = values
    return crops


async def run_requests(batcher: EmbeddingBatcher, n: int) -> list[NDArray[np.float32]]:
    await batcher.start()
    try:
        return list(await asyncio.gather(*(batcher.embed(crops_marked([i, i + 100])) for i in range(n))))
    finally:
        await batcher.stop()


def test_concurrent_requests_share_model_calls() -> None:
    embedder = RecordingEmbedder()
    batcher = EmbeddingBatcher(embedder, enabled=True, max_batch=32, max_wait_ms=20)
    results = asyncio.run(run_requests(batcher, 40))
    for i, rows in enumerate(results):
        assert rows.shape == (2, 4)
        assert rows[:, 0].tolist() == [i, i + 100]  # each caller gets its own rows, in order
    assert sum(embedder.calls) == 80
    assert len(embedder.calls) < 10  # 40 requests, far fewer model calls
    assert max(embedder.calls) <= 32 + 1  # a batch closes once it reaches max_batch


def test_disabled_batcher_calls_once_per_request() -> None:
    embedder = RecordingEmbedder(delay=0)
    batcher = EmbeddingBatcher(embedder, enabled=False)
    results = asyncio.run(run_requests(batcher, 5))
    assert embedder.calls == [2] * 5
    assert [r[:, 0].tolist() for r in results] == [[i, i + 100] for i in range(5)]


class FailingEmbedder(RecordingEmbedder):
    def embed(self, crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        if (crops[:, 0, 0, 0] == 13).any():
            raise RuntimeError("model failure")
        return super().embed(crops)


def test_a_failed_batch_fails_its_requests_and_the_worker_survives() -> None:
    async def scenario() -> None:
        batcher = EmbeddingBatcher(FailingEmbedder(delay=0), enabled=True, max_batch=1, max_wait_ms=0)
        await batcher.start()
        try:
            with pytest.raises(RuntimeError, match="model failure"):
                await batcher.embed(crops_marked([13]))
            ok = await batcher.embed(crops_marked([7]))
            assert ok[0, 0] == 7
        finally:
            await batcher.stop()

    asyncio.run(scenario())

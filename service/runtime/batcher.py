"""Dynamic batching: crops from requests that arrive together go through the model together.

A single worker task drains a queue: it takes what is waiting, waits at most ``max_wait_ms`` for
more, up to ``max_batch`` crops, and runs one model call off the event loop. Throughput under
load then scales with the batch, not with the number of requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.runtime.types import CropBatch, Embedder, Embeddings, crop_arrays

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    crops: tuple[NDArray[np.uint8], ...]  # one array per model input, same number of faces
    future: asyncio.Future[Embeddings]

    def __len__(self) -> int:
        return len(self.crops[0])


def _model_batch(crops: tuple[NDArray[np.uint8], ...]) -> CropBatch:
    """A one-input model gets its bare array, a several-input one the tuple."""
    return crops[0] if len(crops) == 1 else crops


class EmbeddingBatcher:
    """Async front of an :class:`Embedder`; ``enabled=False`` embeds each request on its own."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        enabled: bool = True,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._embedder = embedder
        self.enabled = enabled
        self._max_batch = max_batch
        self._max_wait = max_wait_ms / 1000.0
        self._on_batch = on_batch
        # One model call at a time: onnxruntime already uses every core inside a call.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None

    @property
    def dim(self) -> int:
        return self._embedder.dim

    async def start(self) -> None:
        if self.enabled and self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._run(), name="embedding-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._queue is not None:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("embedding batcher stopped"))
        self._executor.shutdown(wait=True)

    async def embed(self, crops: CropBatch) -> Embeddings:
        """(N, H, W, 3) aligned crops, one array per model input → (N, dim) unit vectors."""
        arrays = crop_arrays(crops)
        count = len(arrays[0])
        if count == 0:
            return np.empty((0, self._embedder.dim), dtype=np.float32)
        loop = asyncio.get_running_loop()
        if not self.enabled or self._queue is None:
            result = await loop.run_in_executor(self._executor, self._embedder.embed, _model_batch(arrays))
            if self._on_batch is not None:
                self._on_batch(count)
            return result
        future: asyncio.Future[Embeddings] = loop.create_future()
        await self._queue.put(_Pending(arrays, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch = [first]
            size = len(first)
            deadline = loop.time() + self._max_wait
            while size < self._max_batch:
                # Poll rather than wait_for(queue.get()): a timed-out get may swallow an item on 3.11.
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    await asyncio.sleep(min(remaining, 0.0005))
                    continue
                batch.append(item)
                size += len(item)
            await self._embed_batch(loop, batch)

    async def _embed_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            crops = batch[0].crops
        else:  # input by input: the i-th array of every request, stacked
            crops = tuple(
                np.concatenate(arrays) for arrays in zip(*(item.crops for item in batch), strict=True)
            )
        total = len(crops[0])
        try:
            vectors = await loop.run_in_executor(self._executor, self._embedder.embed, _model_batch(crops))
        except Exception as exc:  # one failed model call fails its requests, not the worker
            logger.exception("embedding batch of %d failed", total)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(total)
        offset = 0
        for item in batch:
            n = len(item)
            if not item.future.done():
                item.future.set_result(np.ascontiguousarray(vectors[offset : offset + n]))
            offset += n

"""Where image decoding and analysis run: bounded, so one client's giant images cannot starve others.

Images up to ``large_image_pixels`` (photos) share a small thread pool, first come first served.
Larger ones go through a lane of their own: one thread, at a lower CPU priority where the OS allows
it, admitted only while the pixels queued there stay within ``queue_pixels``; a request that would
overflow it is refused at once with ``ServerBusy`` (503 + Retry-After) instead of queueing work it
cannot get done soon. So a client sending giant images waits for its own images, and a photo sent
by anyone else never queues behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from service.errors import ServerBusy

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Niceness of the large-image thread (Linux applies it per thread): under CPU contention it gets
# about a tenth of the CPU share of a normal thread, and all of the CPU when nothing else runs.
LARGE_LANE_NICE = 10
# Freed decode buffers above this size are handed back to the OS after the image (malloc_trim).
TRIM_AFTER_PIXELS = 4_000_000
# Retry-After for a refused request: the time the queued pixels take at the lane's measured rate.
_INITIAL_RATE_PIXELS_PER_S = 50e6
_RETRY_AFTER_BOUNDS_S = (1, 120)


def _lower_priority() -> None:
    """Runs in the large-image thread: yield the CPU to everyone else's requests."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LARGE_LANE_NICE)


class ImageLanes:
    """Thread pools for the CPU half of the pipeline, with admission control for large images."""

    def __init__(
        self,
        *,
        workers: int = 2,
        large_image_pixels: int = 16_000_000,
        queue_pixels: int = 400_000_000,
        trim: Callable[[], None] | None = None,
    ) -> None:
        self.large_image_pixels = large_image_pixels
        self.queue_pixels = queue_pixels
        self._trim = trim
        self._photos = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="analyze")
        self._large = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="analyze-large", initializer=_lower_priority
        )
        self._queued_pixels = 0  # admitted to the large lane and not finished; event loop only
        self._rate = _INITIAL_RATE_PIXELS_PER_S

    def is_large(self, pixels: int) -> bool:
        return pixels > self.large_image_pixels

    @property
    def queued_pixels(self) -> int:
        return self._queued_pixels

    @contextlib.contextmanager
    def reserve(self, pixels: Sequence[int]) -> Iterator[None]:
        """Room in the large lane for a request's large images, all or none (ServerBusy).

        An empty lane always admits, so a request is never refused for being alone and big.
        """
        need = sum(p for p in pixels if self.is_large(p))
        if need and self._queued_pixels and self._queued_pixels + need > self.queue_pixels:
            low, high = _RETRY_AFTER_BOUNDS_S
            retry_after = min(high, max(low, math.ceil(self._queued_pixels / self._rate)))
            raise ServerBusy(
                f"The server is busy with large images ({self._queued_pixels} pixels queued); "
                f"retry in {retry_after} s, or send smaller images.",
                retry_after=retry_after,
            )
        self._queued_pixels += need
        try:
            yield
        finally:
            self._queued_pixels -= need

    async def run(self, fn: Callable[[], T], *, pixels: int) -> T:
        """``fn()`` in the lane for an image of ``pixels`` pixels; large decodes give memory back."""
        loop = asyncio.get_running_loop()
        large = self.is_large(pixels)
        trim = self._trim if pixels > TRIM_AFTER_PIXELS else None

        busy_s = [0.0]

        def work() -> T:
            started = time.perf_counter()
            try:
                return fn()
            finally:
                if trim is not None:
                    trim()
                busy_s[0] = time.perf_counter() - started

        result = await loop.run_in_executor(self._large if large else self._photos, work)
        if large:
            self._rate = 0.7 * self._rate + 0.3 * (pixels / max(busy_s[0], 1e-3))
        return result

    def shutdown(self) -> None:
        self._photos.shutdown(wait=True)
        self._large.shutdown(wait=True)

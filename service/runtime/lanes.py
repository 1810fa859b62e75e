"""Where image decoding and analysis run: bounded, so one client's giant images cannot starve others.

Images up to ``large_image_pixels`` (photos) share a small thread pool, first come first served.
Larger ones go through a lane of their own: one worker *process* at a lower CPU priority, admitted
only while the pixels queued there stay within ``queue_pixels``; a request that would overflow it is
refused at once with ``ServerBusy`` (503 + Retry-After) instead of queueing work it cannot get done
soon. So a client sending giant images waits for its own images, and a photo sent by anyone else
never queues behind them.

Why a process and not a low-priority thread: a thread shares the GIL (and the allocator's locks)
with the server, and a deprioritised thread waiting for the GIL makes CPython's forced switch wait
for it, so it slows everyone else (measured: p99 of a concurrent identify 2.8x idle at nice 10,
4.7x at nice 19, 1.8x in a process). The process also keeps the giant decode buffers out of the
server's heap. It starts on the first large image (about a second) and stops after
``LARGE_WORKER_IDLE_S`` without one, so its memory goes back to the OS too. It dies with the server
however the server dies (service/runtime/lifeline.py), so a crash leaves no orphan behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from service.errors import ServerBusy
from service.runtime.alignment import AlignmentTemplate
from service.runtime.analyzer import AnalyzedFace, FaceAnalyzer
from service.runtime.detector import load_detector
from service.runtime.glibc import heap_trimmer
from service.runtime.lifeline import die_with_parent
from service.runtime.quality import QualityConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Niceness of the large-image process: under CPU contention it gets about a tenth of the CPU share
# of the server's threads, and all of a core when nothing else runs.
LARGE_LANE_NICE = 10
# Freed decode buffers above this size are handed back to the OS after the image (malloc_trim).
TRIM_AFTER_PIXELS = 4_000_000
# The worker process exits after this long without a large image (the next one starts it again).
LARGE_WORKER_IDLE_S = 30.0
# Retry-After for a refused request: the time the queued pixels take at the lane's measured rate.
_INITIAL_RATE_PIXELS_PER_S = 50e6
_RETRY_AFTER_BOUNDS_S = (1, 120)


@dataclass(frozen=True, slots=True)
class AnalyzerSpec:
    """How to build the detect-align-grade front end in another process (picklable)."""

    detector_path: Path
    score_threshold: float
    detection_side: int
    alignments: tuple[AlignmentTemplate, ...]  # one crop per model input, as the card says
    quality: QualityConfig
    cpu_graph_rewrites: bool = True

    def build(self) -> FaceAnalyzer:
        # One CPU thread: the lane is one image at a time, in the background.
        detector = load_detector(
            self.detector_path,
            "cpu",
            1,
            self.score_threshold,
            self.detection_side,
            cpu_graph_rewrites=self.cpu_graph_rewrites,
        )
        return FaceAnalyzer(detector, self.alignments, self.quality, detection_side=self.detection_side)


# The analyzer of a large-image worker process, built once by its initializer (a process pool's
# per-process state cannot be injected; the server process never sets it).
_worker_analyzer: list[FaceAnalyzer] = []


def _start_worker(spec: AnalyzerSpec, server_pid: int) -> None:
    die_with_parent(server_pid)  # no orphan when the server is killed (SIGKILL, OOM)
    with contextlib.suppress(OSError):  # not allowed: run at normal priority
        os.nice(LARGE_LANE_NICE)
    _worker_analyzer.append(spec.build())


def _analyze_in_worker(
    data: bytes, max_pixels: int, max_faces: int | None
) -> tuple[list[AnalyzedFace], float]:
    """Runs in the worker process: the faces, and the seconds the analysis took."""
    started = time.perf_counter()
    try:
        faces = _worker_analyzer[0].analyze_encoded(data, max_pixels=max_pixels, max_faces=max_faces)
    finally:
        trim = heap_trimmer()
        if trim is not None:
            trim()
    return faces, time.perf_counter() - started


class ImageLanes:
    """Decode-and-analyse pools for the CPU half of the pipeline, with admission for large images.

    Without ``large_spec`` (tests, tools) large images run on one dedicated thread instead of a process.
    """

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        *,
        large_spec: AnalyzerSpec | None = None,
        workers: int = 2,
        large_image_pixels: int = 16_000_000,
        queue_pixels: int = 400_000_000,
        trim: Callable[[], None] | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.large_image_pixels = large_image_pixels
        self.queue_pixels = queue_pixels
        self._spec = large_spec
        self._trim = trim
        self._photos = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="analyze")
        self._large: Executor = self._large_executor()
        self._queued_pixels = 0  # admitted to the large lane and not finished; event loop only
        self._rate = _INITIAL_RATE_PIXELS_PER_S
        self._last_large = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def _large_executor(self) -> Executor:
        if self._spec is None:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="analyze-large")
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._spec, os.getpid()),
        )

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

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the photo lane (cheap work: header probes)."""
        return await asyncio.get_running_loop().run_in_executor(self._photos, fn)

    async def analyze(
        self, data: bytes, *, pixels: int, max_pixels: int, max_faces: int | None
    ) -> list[AnalyzedFace]:
        """Faces of an admitted image of ``pixels`` pixels, on the lane its size calls for."""
        loop = asyncio.get_running_loop()
        if not self.is_large(pixels):
            trim = self._trim if pixels > TRIM_AFTER_PIXELS else None

            def work() -> list[AnalyzedFace]:
                try:
                    return self.analyzer.analyze_encoded(data, max_pixels=max_pixels, max_faces=max_faces)
                finally:
                    if trim is not None:
                        trim()

            return await loop.run_in_executor(self._photos, work)
        if self._spec is None:
            started = time.perf_counter()
            faces = await loop.run_in_executor(
                self._large,
                lambda: self.analyzer.analyze_encoded(data, max_pixels=max_pixels, max_faces=max_faces),
            )
            busy_s = time.perf_counter() - started  # with queueing: a rough rate, for this fallback only
        else:
            executor = self._large
            try:
                faces, busy_s = await loop.run_in_executor(
                    executor, _analyze_in_worker, data, max_pixels, max_faces
                )
            except BrokenProcessPool as exc:
                # The worker died (e.g. killed for memory): start a fresh one for the next request.
                logger.error("large-image worker process died; restarting it")
                if self._large is executor:
                    self._large = self._large_executor()
                raise ServerBusy("The large-image worker restarted; retry.", retry_after=1) from exc
        self._rate = 0.7 * self._rate + 0.3 * (pixels / max(busy_s, 1e-3))
        self._last_large = loop.time()
        if self._spec is not None and self._idle_timer is None:
            self._idle_timer = loop.call_later(LARGE_WORKER_IDLE_S, self._stop_worker_if_idle, loop)
        return faces

    def _stop_worker_if_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        idle_s = loop.time() - self._last_large
        if self._queued_pixels or idle_s < LARGE_WORKER_IDLE_S:
            self._idle_timer = loop.call_later(
                max(LARGE_WORKER_IDLE_S - idle_s, 1.0), self._stop_worker_if_idle, loop
            )
            return
        self._idle_timer = None
        # A fresh executor starts no process until the next large image arrives.
        idle, self._large = self._large, self._large_executor()
        idle.shutdown(wait=False)
        logger.info("large-image worker stopped after %.0f s without a large image", idle_s)

    def shutdown(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._photos.shutdown(wait=True)
        self._large.shutdown(wait=True)

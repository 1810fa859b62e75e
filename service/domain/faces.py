"""Image bytes → analysed, embedded faces; the step enrollment, search and verification share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from service.errors import InvalidRequest, NoFaceFound
from service.runtime.analyzer import AnalyzedFace, FaceAnalyzer
from service.runtime.batcher import EmbeddingBatcher
from service.runtime.imaging import decode_image

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class EmbeddedFace:
    analyzed: AnalyzedFace
    embedding: NDArray[np.float32]

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.analyzed.face.box


def squared_distance(similarity: float) -> float:
    """d² = 2 − 2·cos for unit vectors, clipped to its exact range [0, 4]."""
    return float(np.clip(2.0 - 2.0 * similarity, 0.0, 4.0))


class FaceEngine:
    """Decodes and analyses images off the event loop, and embeds crops through the batcher."""

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        batcher: EmbeddingBatcher,
        *,
        default_threshold: float,
        max_image_pixels: int,
        workers: int = 2,
        on_faces: Callable[[int], None] | None = None,
    ) -> None:
        self._analyzer = analyzer
        self._batcher = batcher
        self.default_threshold = default_threshold
        self._max_pixels = max_image_pixels
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="analyze")
        self._on_faces = on_faces

    @property
    def dim(self) -> int:
        return self._batcher.dim

    async def start(self) -> None:
        await self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()
        self._executor.shutdown(wait=True)

    def threshold(self, requested: float | None) -> float:
        if requested is None:
            return self.default_threshold
        if not 0.0 <= requested <= 4.0:
            raise InvalidRequest("threshold is a squared L2 distance and must lie in [0, 4].")
        return requested

    async def _off_loop(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def analyze(self, data: bytes, max_faces: int | None = None) -> list[AnalyzedFace]:
        """Decode and detect; raises ImageError/UnsupportedMediaType for unusable files."""

        def work() -> list[AnalyzedFace]:
            image = decode_image(data, max_pixels=self._max_pixels)
            return self._analyzer.analyze(image, max_faces=max_faces)

        faces = await self._off_loop(work)
        if self._on_faces is not None:
            self._on_faces(len(faces))
        return faces

    async def embed(self, faces: list[AnalyzedFace]) -> list[EmbeddedFace]:
        if not faces:
            return []
        # One array per model input: the i-th crop of every face.
        crops = tuple(
            np.ascontiguousarray(np.stack(per_input))
            for per_input in zip(*(f.crops for f in faces), strict=True)
        )
        vectors = await self._batcher.embed(crops)
        return [EmbeddedFace(face, vectors[i]) for i, face in enumerate(faces)]

    async def embed_image(self, data: bytes, max_faces: int | None = None) -> list[EmbeddedFace]:
        """Every face of an image, largest first; NoFaceFound when there is none."""
        faces = await self.analyze(data, max_faces)
        if not faces:
            raise NoFaceFound("No face was found in the image.")
        return await self.embed(faces)

"""Image bytes → analysed, embedded faces; the step enrollment, search and verification share."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from service.errors import NoFaceFound, RequestTooManyPixels, ServiceError
from service.runtime.analyzer import AnalyzedFace, FaceAnalyzer
from service.runtime.batcher import EmbeddingBatcher
from service.runtime.imaging import ImageInfo, probe_image
from service.runtime.lanes import ImageLanes

logger = logging.getLogger(__name__)

# What the header of an uploaded image said: its size, or why it cannot be used.
Probe = ImageInfo | ServiceError


@dataclass(frozen=True, slots=True)
class EmbeddedFace:
    analyzed: AnalyzedFace
    embedding: NDArray[np.float32]

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.analyzed.face.box


def squared_distances(similarities: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """d² = 2 − 2·cos for unit vectors, clipped to its exact range [0, 4]: the one place it is written."""
    return np.clip(2.0 - 2.0 * np.asarray(similarities, dtype=np.float64), 0.0, 4.0)


def squared_distance(similarity: float) -> float:
    """``squared_distances`` of one cosine."""
    return float(squared_distances(np.asarray(similarity)))


class FaceEngine:
    """Decodes and analyses images off the event loop, and embeds crops through the batcher.

    Every request's images are admitted first (``admit``): their pixels, read from the headers,
    must fit the per-request budget, and large ones need room in the large-image lane.
    """

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        batcher: EmbeddingBatcher,
        *,
        max_image_pixels: int,
        max_request_pixels: int | None = None,
        lanes: ImageLanes | None = None,
        on_faces: Callable[[int], None] | None = None,
    ) -> None:
        self._batcher = batcher
        self._max_pixels = max_image_pixels
        self._max_request_pixels = max_request_pixels
        self._lanes = lanes if lanes is not None else ImageLanes(analyzer)
        self._on_faces = on_faces

    @property
    def lanes(self) -> ImageLanes:
        return self._lanes

    @property
    def dim(self) -> int:
        return self._batcher.dim

    async def start(self) -> None:
        await self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()
        self._lanes.shutdown()

    def _probe(self, data: bytes) -> Probe:
        try:
            return probe_image(data, max_pixels=self._max_pixels)
        except ServiceError as exc:
            return exc

    @contextlib.asynccontextmanager
    async def admit(self, images: Sequence[bytes]) -> AsyncIterator[list[Probe]]:
        """Read every header, enforce the request's pixel budget and reserve the large-image lane.

        Raises RequestTooManyPixels or ServerBusy before any pixel is decoded; yields one probe per
        image, in order, to hand to ``analyze`` (an image whose header is unusable gets its error).
        """
        probes = await self._lanes.run(lambda: [self._probe(data) for data in images])
        sizes = [p.pixels for p in probes if isinstance(p, ImageInfo)]
        if self._max_request_pixels is not None and sum(sizes) > self._max_request_pixels:
            raise RequestTooManyPixels(
                f"The images of this request have {sum(sizes)} pixels in all; the limit is "
                f"{self._max_request_pixels}. Send fewer or smaller images per request.",
                pixels=sum(sizes),
                limit=self._max_request_pixels,
            )
        with self._lanes.reserve(sizes):
            yield probes

    async def analyze(
        self, data: bytes, max_faces: int | None = None, probe: Probe | None = None
    ) -> list[AnalyzedFace]:
        """Decode and detect; raises ImageError/UnsupportedMediaType for unusable files.

        Without ``probe`` the image is admitted on its own (as a one-image request).
        """
        if probe is None:
            async with self.admit([data]) as probes:
                return await self.analyze(data, max_faces, probes[0])
        if isinstance(probe, ServiceError):
            raise probe

        faces = await self._lanes.analyze(
            data, pixels=probe.pixels, max_pixels=self._max_pixels, max_faces=max_faces
        )
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

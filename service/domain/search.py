"""1:N identification: every face of a probe image against a collection, ranked per subject."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from service.domain.faces import EmbeddedFace, FaceEngine
from service.domain.gallery import Candidate, Gallery


@dataclass(frozen=True, slots=True)
class FaceMatches:
    face: EmbeddedFace
    candidates: list[Candidate]
    match: Candidate | None


async def identify(
    engine: FaceEngine,
    gallery: Gallery,
    collection: str,
    data: bytes,
    *,
    top_k: int,
    threshold: float,
    max_faces: int,
) -> list[FaceMatches]:
    """Unknown people come back with ``match=None``: the best distance must be ≤ threshold."""
    # Resolved before the image work so an unknown collection fails fast.
    collection_pk = await asyncio.to_thread(gallery.store.collection_pk, collection)
    faces = await engine.embed_image(data, max_faces=max_faces)
    queries = np.ascontiguousarray(np.stack([f.embedding for f in faces]))
    ranked = await asyncio.to_thread(gallery.search, collection_pk, queries, top_k)
    results = []
    for face, candidates in zip(faces, ranked, strict=True):
        best = candidates[0] if candidates else None
        match = best if best is not None and best.distance <= threshold else None
        results.append(FaceMatches(face, candidates, match))
    return results

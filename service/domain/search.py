"""1:N identification: every face of a probe image against a collection, ranked per subject."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from service.domain.faces import EmbeddedFace, FaceEngine
from service.domain.gallery import Gallery
from service.domain.ranking import Candidate
from service.domain.thresholds import ThresholdInForce, ThresholdPolicy


@dataclass(frozen=True, slots=True)
class FaceMatches:
    face: EmbeddedFace
    candidates: list[Candidate]
    match: Candidate | None


@dataclass(frozen=True, slots=True)
class Identification:
    threshold: ThresholdInForce
    faces: list[FaceMatches]


async def identify(
    engine: FaceEngine,
    gallery: Gallery,
    collection: str,
    data: bytes,
    *,
    top_k: int,
    thresholds: ThresholdPolicy,
    requested_threshold: float | None,
    max_faces: int,
) -> Identification:
    """Unknown people come back with ``match=None``: the best distance must be ≤ the threshold in
    force (the request's, else the collection's own, else the service's identify default at the
    collection's number of subjects)."""
    # Resolved before the image work so an unknown collection fails fast; one row read gives the
    # key, the collection's own threshold and its subject and face counts (counters, not a scan).
    lookup = await asyncio.to_thread(gallery.collection_lookup, collection)
    threshold = thresholds.identify(
        requested_threshold, lookup.own_threshold, lookup.subject_count, lookup.face_count
    )
    faces = await engine.embed_image(data, max_faces=max_faces)
    queries = np.ascontiguousarray(np.stack([f.embedding for f in faces]))
    ranked = await asyncio.to_thread(gallery.search, lookup.pk, queries, top_k)
    results = []
    for face, candidates in zip(faces, ranked, strict=True):
        best = candidates[0] if candidates else None
        match = best if best is not None and best.distance <= threshold.value else None
        results.append(FaceMatches(face, candidates, match))
    return Identification(threshold, results)

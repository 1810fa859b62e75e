"""1:1 verification: one face against another, or against a subject's enrolled faces."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from service.domain.faces import EmbeddedFace, FaceEngine, squared_distance
from service.domain.gallery import Gallery
from service.errors import FaceNotFound, NoFaceFound


@dataclass(frozen=True, slots=True)
class Verdict:
    distance: float  # squared L2 in [0, 4]
    similarity: float  # cosine
    threshold: float
    match: bool
    face_a: EmbeddedFace
    face_b: EmbeddedFace | None = None
    face_id: str | None = None  # the subject's closest enrolled face


def _verdict(similarity: float, threshold: float, face_a: EmbeddedFace) -> Verdict:
    similarity = float(np.clip(similarity, -1.0, 1.0))
    distance = squared_distance(similarity)
    return Verdict(distance, similarity, threshold, distance <= threshold, face_a)


async def verify_pair(engine: FaceEngine, image_a: bytes, image_b: bytes, *, threshold: float) -> Verdict:
    """Compares the largest face of each image."""
    async with engine.admit([image_a, image_b]) as (probe_a, probe_b):
        faces_a, faces_b = await asyncio.gather(
            engine.analyze(image_a, max_faces=1, probe=probe_a),
            engine.analyze(image_b, max_faces=1, probe=probe_b),
        )
    if not faces_a:
        raise NoFaceFound("No face was found in image_a.", image="image_a")
    if not faces_b:
        raise NoFaceFound("No face was found in image_b.", image="image_b")
    a, b = await engine.embed([faces_a[0], faces_b[0]])
    verdict = _verdict(float(a.embedding @ b.embedding), threshold, a)
    return Verdict(verdict.distance, verdict.similarity, threshold, verdict.match, a, b)


async def verify_subject(
    engine: FaceEngine, gallery: Gallery, collection: str, subject_id: str, image: bytes, *, threshold: float
) -> Verdict:
    """Distance to the subject's closest enrolled face."""
    face_ids, enrolled = await asyncio.to_thread(gallery.subject_embeddings, collection, subject_id)
    if enrolled.size == 0:
        raise FaceNotFound(f"Subject '{subject_id}' has no enrolled faces.")
    faces = await engine.embed_image(image, max_faces=1)
    sims = enrolled @ faces[0].embedding
    best = int(np.argmax(sims))
    verdict = _verdict(float(sims[best]), threshold, faces[0])
    return Verdict(
        verdict.distance, verdict.similarity, threshold, verdict.match, faces[0], face_id=face_ids[best]
    )

"""Face-by-face operations (the Rekognition-compatible API's view of the gallery).

A Rekognition collection holds *faces*, each optionally under a user (our subject): indexing stores
every accepted face of an image, free-standing unless associated later; searches return faces or,
per subject, exactly what ``/v1`` identify returns. Quality filters are our quality gate at
graded strictness.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from service.domain.enroll import quality_dict
from service.domain.faces import EmbeddedFace, FaceEngine
from service.domain.gallery import Gallery
from service.domain.thresholds import ThresholdPolicy

# Re-exported: the API layer names faces and quality reasons from the domain, never from runtime.
from service.runtime.analyzer import AnalyzedFace as AnalyzedFace
from service.runtime.imaging import thumbnail_jpeg, upright_size
from service.runtime.quality import BLURRY as BLURRY
from service.runtime.quality import FACE_TOO_SMALL as FACE_TOO_SMALL
from service.runtime.quality import LOW_DETECTOR_SCORE as LOW_DETECTOR_SCORE
from service.runtime.quality import QualityConfig
from service.storage.records import CollectionRecord, FaceRecord, NewFace, SubjectRecord

EXCEEDS_MAX_FACES = "exceeds_max_faces"
NOT_LARGEST = "not_largest"


class QualityLevel(StrEnum):
    """How strict the quality gate is: NONE keeps every detected face; MEDIUM (and AUTO) is the
    configured gate (FACES_MIN_FACE_SIZE_PX, FACES_MIN_DETECTOR_SCORE, FACES_MIN_SHARPNESS); LOW
    and HIGH scale its three minimums by 0.75 and 1.25 (the detector score capped at 1)."""

    NONE = "NONE"
    AUTO = "AUTO"
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


_SCALE = {QualityLevel.LOW: 0.75, QualityLevel.MEDIUM: 1.0, QualityLevel.AUTO: 1.0, QualityLevel.HIGH: 1.25}


def quality_rejections(face: AnalyzedFace, config: QualityConfig, level: QualityLevel) -> list[str]:
    """Why ``face`` fails the gate at ``level`` (our reason codes); empty when it passes."""
    if level is QualityLevel.NONE:
        return []
    scale = _SCALE[level]
    q = face.quality
    reasons = []
    if q.face_size_px < config.min_face_size_px * scale:
        reasons.append(FACE_TOO_SMALL)
    if q.detector_score < min(config.min_detector_score * scale, 1.0):
        reasons.append(LOW_DETECTOR_SCORE)
    if q.sharpness < config.min_sharpness * scale:
        reasons.append(BLURRY)
    return reasons


@dataclass(frozen=True, slots=True)
class ImageFaces:
    """Every detected face of an image, largest first, and the upright image size they lie in."""

    size: tuple[int, int]  # (width, height)
    faces: list[AnalyzedFace]


async def detect_faces(engine: FaceEngine, data: bytes, max_pixels: int) -> ImageFaces:
    """Decode and detect (no embedding); the same errors as every image operation."""
    faces = await engine.analyze(data)
    return ImageFaces(upright_size(data, max_pixels=max_pixels), faces)


@dataclass(frozen=True, slots=True)
class Unindexed:
    face: AnalyzedFace
    reasons: list[str]  # our quality codes and/or EXCEEDS_MAX_FACES


@dataclass(frozen=True, slots=True)
class IndexedImage:
    image_id: str
    size: tuple[int, int]
    indexed: list[tuple[AnalyzedFace, FaceRecord]]
    unindexed: list[Unindexed]


async def index_image(
    engine: FaceEngine,
    gallery: Gallery,
    collection: str,
    data: bytes,
    *,
    external_image_id: str | None,
    max_faces: int | None,
    level: QualityLevel,
    max_pixels: int,
    keep_thumbnails: bool,
) -> IndexedImage:
    """Store every face of the image that passes the gate at ``level``, largest first, at most
    ``max_faces`` (the rest: EXCEEDS_MAX_FACES), as free-standing faces with one new image id."""
    await asyncio.to_thread(gallery.collection_lookup, collection)  # unknown collection: fail fast
    image = await detect_faces(engine, data, max_pixels)
    config = engine.lanes.analyzer.quality
    kept: list[AnalyzedFace] = []
    unindexed: list[Unindexed] = []
    for face in image.faces:  # largest first
        reasons = quality_rejections(face, config, level)
        if reasons:
            unindexed.append(Unindexed(face, reasons))
        elif max_faces is not None and len(kept) >= max_faces:
            unindexed.append(Unindexed(face, [EXCEEDS_MAX_FACES]))
        else:
            kept.append(face)
    image_id = str(uuid.uuid4())
    if not kept:
        return IndexedImage(image_id, image.size, [], unindexed)
    embedded = await engine.embed(kept)
    digest = hashlib.sha256(data).hexdigest()

    def persist() -> list[FaceRecord]:
        new_faces = [
            NewFace(
                embedding=e.embedding,
                box=e.box,
                # The upright image size: what the face's box is a ratio of (Rekognition's BoundingBox).
                quality={**quality_dict(e.analyzed), "image_size": list(image.size)},
                source_hash=digest,
                source_name=external_image_id,
                thumbnail=thumbnail_jpeg(e.analyzed.crop) if keep_thumbnails else None,
                external_image_id=external_image_id,
                image_id=image_id,
            )
            for e in embedded
        ]
        return gallery.add_faces(collection, None, new_faces, create_subject=False)

    records = await asyncio.to_thread(persist)
    return IndexedImage(image_id, image.size, list(zip(kept, records, strict=True)), unindexed)


@dataclass(frozen=True, slots=True)
class Probe:
    """The face an image search uses (the largest that passes the gate) and the faces it did not."""

    size: tuple[int, int]
    face: EmbeddedFace
    skipped: list[Unindexed]


async def probe_face(
    engine: FaceEngine, data: bytes, *, level: QualityLevel, max_pixels: int
) -> Probe | ImageFaces:
    """The largest face of the image that passes the gate at ``level``, embedded; the analysed
    image instead when none does (the caller says why: no face, or every face filtered)."""
    image = await detect_faces(engine, data, max_pixels)
    config = engine.lanes.analyzer.quality
    skipped: list[Unindexed] = []
    chosen: AnalyzedFace | None = None
    for face in image.faces:
        reasons = quality_rejections(face, config, level)
        if chosen is None and not reasons:
            chosen = face
        elif chosen is None:
            skipped.append(Unindexed(face, reasons))
        else:
            skipped.append(Unindexed(face, [NOT_LARGEST, *reasons]))
    if chosen is None:
        return image
    (embedded,) = await engine.embed([chosen])
    return Probe(image.size, embedded, skipped)


# -- reads of the face-by-face view (the API layer reads through these, never the store) -------------


def identify_threshold_of(
    gallery: Gallery, thresholds: ThresholdPolicy, collection: str
) -> tuple[int, float]:
    """The collection's key and the identify threshold in force (its own or the service default):
    what /v1 identify decides with."""
    lookup = gallery.collection_lookup(collection)
    threshold = thresholds.identify(None, lookup.own_threshold, lookup.subject_count, lookup.face_count)
    return lookup.pk, threshold.value


def list_collections(gallery: Gallery) -> list[CollectionRecord]:
    return gallery.list_collections()


def describe_collection(gallery: Gallery, collection: str) -> CollectionRecord:
    return gallery.get_collection(collection)


def faces_page(
    gallery: Gallery,
    collection: str,
    *,
    after_pk: int,
    limit: int,
    subject_id: str | None = None,
    face_ids: Sequence[str] | None = None,
) -> list[FaceRecord]:
    """Faces in pk order after ``after_pk``: a page of a walk that sees each face once."""
    return gallery.store.faces.faces_page(
        collection, after_pk=after_pk, limit=limit, subject_id=subject_id, face_ids=face_ids
    )


def faces_by_id(
    gallery: Gallery, collection: str, face_ids: Sequence[str], *, with_embedding: bool = False
) -> dict[str, FaceRecord]:
    return gallery.store.faces.faces_by_id(collection, face_ids, with_embedding=with_embedding)


def subject_embeddings(gallery: Gallery, collection: str, subject_id: str) -> NDArray[np.float32]:
    """The subject's face embeddings (rows), empty when it has none; SubjectNotFound if absent."""
    return gallery.store.faces.subject_embeddings(collection, subject_id)[1]


def subjects_page(gallery: Gallery, collection: str, after: str | None, limit: int) -> list[SubjectRecord]:
    """Subjects in id order after ``after``: a page of a walk that sees each subject once."""
    return gallery.store.subjects.subjects_after(collection, after, limit)

"""Enrollment: every image gets its own verdict; the accepted faces are stored in one transaction."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from service.domain.faces import FaceEngine, Probe
from service.domain.gallery import Gallery
from service.domain.idempotency import Answer, IdempotentWrite
from service.errors import (
    ImageError,
    LowQualityFace,
    MultipleFaces,
    NoFaceFound,
    NoImageEnrolled,
    PayloadTooLarge,
    ServiceError,
    UnsupportedMediaType,
)
from service.runtime.analyzer import AnalyzedFace
from service.runtime.imaging import thumbnail_jpeg
from service.storage.records import FaceRecord, NewFace


class FaceSelection(StrEnum):
    strict = "strict"  # exactly one face, or the image is rejected
    largest = "largest"  # the largest face when there are several


@dataclass(frozen=True, slots=True)
class UploadedImage:
    filename: str
    data: bytes
    source_hash: str | None = None


@dataclass(slots=True)
class ImageOutcome:
    filename: str
    face: AnalyzedFace | None = None
    faces_detected: int = 0
    error: ServiceError | None = None
    record: FaceRecord | None = None
    source_hash: str | None = None


@dataclass(slots=True)
class Enrollment:
    """Every image's outcome; ``searchable`` False: stored, the vector engine takes them later."""

    images: list[ImageOutcome]
    searchable: bool = True


def quality_dict(face: AnalyzedFace) -> dict[str, Any]:
    q = face.quality
    return {
        "face_size_px": round(float(q.face_size_px), 2),
        "detector_score": round(float(q.detector_score), 4),
        "sharpness": round(float(q.sharpness), 2),
        "passed": bool(q.passed),
        "reasons": list(q.reasons),
    }


async def _choose_face(
    engine: FaceEngine,
    image: UploadedImage,
    selection: FaceSelection,
    max_upload_bytes: int,
    probe: Probe | None,
) -> ImageOutcome:
    digest = image.source_hash or hashlib.sha256(image.data).hexdigest()
    outcome = ImageOutcome(image.filename, source_hash=digest)
    if probe is None:  # over the size limit: never admitted
        outcome.error = PayloadTooLarge(f"The file is larger than {max_upload_bytes} bytes.")
        return outcome
    try:
        faces = await engine.analyze(image.data, probe=probe)
    except (ImageError, UnsupportedMediaType) as exc:
        outcome.error = exc
        return outcome
    outcome.faces_detected = len(faces)
    if not faces:
        outcome.error = NoFaceFound("No face was found in the image.")
    elif len(faces) > 1 and selection is FaceSelection.strict:
        outcome.error = MultipleFaces(
            f"{len(faces)} faces were found; send one face per image or use face_selection=largest.",
            faces=len(faces),
        )
    elif not faces[0].quality.passed:
        outcome.face = faces[0]
        outcome.error = LowQualityFace(
            "The face is below the quality gate: " + ", ".join(faces[0].quality.reasons) + ".",
            reasons=list(faces[0].quality.reasons),
        )
    else:
        outcome.face = faces[0]
    return outcome


async def enroll_images(
    engine: FaceEngine,
    gallery: Gallery,
    collection: str,
    subject_id: str,
    images: list[UploadedImage],
    *,
    selection: FaceSelection,
    create_subject: bool,
    max_upload_bytes: int,
    keep_thumbnails: bool,
    idempotent: IdempotentWrite | None = None,
    render: Callable[[Enrollment], Answer] | None = None,
) -> Enrollment:
    """Analyse every image, embed the accepted faces together, persist them atomically.

    ``keep_thumbnails`` stores a small JPEG of each aligned crop with its face (for the console).
    With ``idempotent``, ``render(enrollment)`` is recorded as the request's answer in the faces'
    own transaction (and corrected when the vector engine does not take them).
    """
    # Fail fast on a missing collection/subject before spending time on the model.
    await asyncio.to_thread(gallery.collection_pk, collection)
    if not create_subject:
        await asyncio.to_thread(gallery.get_subject, collection, subject_id)
    within = [img for img in images if len(img.data) <= max_upload_bytes]
    async with engine.admit([img.data for img in within]) as admitted:
        probes = dict(zip((id(img) for img in within), admitted, strict=True))
        choices = [
            _choose_face(engine, img, selection, max_upload_bytes, probes.get(id(img))) for img in images
        ]
        outcomes = list(await asyncio.gather(*choices))
    enrollment = Enrollment(outcomes)
    accepted = [o for o in outcomes if o.error is None and o.face is not None]
    if not accepted:
        return enrollment
    embedded = await engine.embed([o.face for o in accepted if o.face is not None])

    def attach(records: list[FaceRecord]) -> Enrollment:
        for outcome, record in zip(accepted, records, strict=True):
            outcome.record = record
        return enrollment

    def persist() -> None:
        new_faces = [
            NewFace(
                embedding=e.embedding,
                box=e.box,
                quality=quality_dict(e.analyzed),
                source_hash=o.source_hash,
                source_name=o.filename[:512] or None,
                thumbnail=thumbnail_jpeg(e.analyzed.crop) if keep_thumbnails else None,
            )
            for o, e in zip(accepted, embedded, strict=True)
        ]
        within = None
        if idempotent is not None and render is not None:
            within = idempotent.within(lambda records: render(attach(records)))
        stored = gallery.store_faces(
            collection, subject_id, new_faces, create_subject=create_subject, within=within
        )
        attach(stored.records)
        enrollment.searchable = stored.searchable
        if idempotent is not None and render is not None and not stored.searchable:
            idempotent.correct(render(enrollment))

    await asyncio.to_thread(persist)
    return enrollment


def all_rejected_error(outcomes: list[ImageOutcome]) -> ServiceError:
    """The problem to report when no image of a request could be enrolled.

    When every image was rejected for the same reason, that reason's code and status (one text
    file: 415 unsupported_media_type; no face anywhere: 422 no_face); otherwise 422
    no_image_enrolled. The per-image results ride along either way.
    """
    errors = [o.error for o in outcomes if o.error is not None]
    codes = {e.code for e in errors}
    if len(errors) == 1 or len(codes) == 1:
        first = errors[0]
        return type(first)(first.detail, **first.extra)
    return NoImageEnrolled("None of the images could be enrolled; see results for each image.")

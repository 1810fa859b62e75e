"""What the API answers, as typed, immutable records (parsed from its JSON; unknown fields are ignored).

Distances are squared L2 distances of unit vectors, d² = 2 − 2·cos, in [0, 4]; lower is closer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

Box = tuple[float, float, float, float]
"""x, y, width, height in pixels of the uploaded (EXIF-upright) image."""


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(str(value)) if value else None


def _box(value: Any) -> Box | None:
    if value is None:
        return None
    x, y, w, h = (float(v) for v in value)
    return (x, y, w, h)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True, slots=True)
class Threshold:
    """A threshold in force and where it comes from (``source``: model_card_by_size, settings,
    collection...); for model_card_by_size, the subject and face counts it was read at."""

    value: float
    source: str
    set_at: datetime | None
    read_at_subjects: int | None = None
    read_at_faces: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Threshold:
        return cls(
            float(data["value"]),
            str(data["source"]),
            _time(data.get("set_at")),
            _int_or_none(data.get("read_at_subjects")),
            _int_or_none(data.get("read_at_faces")),
        )


@dataclass(frozen=True, slots=True)
class Collection:
    name: str
    description: str
    created_at: datetime | None
    subject_count: int
    face_count: int
    identify_threshold: Threshold
    verify_threshold: Threshold

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Collection:
        return cls(
            name=str(data["name"]),
            description=str(data.get("description") or ""),
            created_at=_time(data.get("created_at")),
            subject_count=int(data.get("subject_count", 0)),
            face_count=int(data.get("face_count", 0)),
            identify_threshold=Threshold.from_json(data["identify_threshold"]),
            verify_threshold=Threshold.from_json(data["verify_threshold"]),
        )


@dataclass(frozen=True, slots=True)
class Subject:
    subject_id: str
    name: str | None
    metadata: Mapping[str, Any]
    created_at: datetime | None
    face_count: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Subject:
        return cls(
            subject_id=str(data["subject_id"]),
            name=data.get("name"),
            metadata=dict(data.get("metadata") or {}),
            created_at=_time(data.get("created_at")),
            face_count=int(data.get("face_count", 0)),
        )


@dataclass(frozen=True, slots=True)
class SubjectPage:
    """One page of ``GET .../subjects``; ``FacesClient.iter_subjects`` walks all of them."""

    items: tuple[Subject, ...]
    total: int
    offset: int
    limit: int

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SubjectPage:
        return cls(
            items=tuple(Subject.from_json(s) for s in data.get("items", ())),
            total=int(data["total"]),
            offset=int(data["offset"]),
            limit=int(data["limit"]),
        )


@dataclass(frozen=True, slots=True)
class FaceQuality:
    face_size_px: float
    detector_score: float
    sharpness: float
    passed: bool
    reasons: tuple[str, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaceQuality:
        return cls(
            face_size_px=float(data["face_size_px"]),
            detector_score=float(data["detector_score"]),
            sharpness=float(data["sharpness"]),
            passed=bool(data["passed"]),
            reasons=tuple(str(r) for r in data.get("reasons", ())),
        )


@dataclass(frozen=True, slots=True)
class Face:
    """An enrolled face; ``source_hash`` is the sha256 the client sent with its file, if any."""

    face_id: str
    subject_id: str
    box: Box | None
    quality: Mapping[str, Any]
    source_hash: str | None
    filename: str | None
    created_at: datetime | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Face:
        return cls(
            face_id=str(data["face_id"]),
            subject_id=str(data.get("subject_id") or ""),
            box=_box(data.get("box")),
            quality=dict(data.get("quality") or {}),
            source_hash=data.get("source_hash"),
            filename=data.get("filename"),
            created_at=_time(data.get("created_at")),
        )


@dataclass(frozen=True, slots=True)
class ImageProblem:
    """Why one image was rejected (``no_face``, ``multiple_faces``, ``unsupported_media_type``...)."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class EnrollResult:
    """The outcome for one uploaded image: ``status`` is ``enrolled`` (with ``face_id``) or ``rejected``."""

    filename: str
    status: str
    face_id: str | None = None
    box: Box | None = None
    quality: FaceQuality | None = None
    faces_detected: int = 0
    source_hash: str | None = None
    error: ImageProblem | None = None

    @property
    def enrolled(self) -> bool:
        return self.status == "enrolled"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EnrollResult:
        error = data.get("error")
        quality = data.get("quality")
        return cls(
            filename=str(data.get("filename") or ""),
            status=str(data.get("status") or "unknown"),
            face_id=data.get("face_id"),
            box=_box(data.get("box")),
            quality=FaceQuality.from_json(quality) if isinstance(quality, Mapping) else None,
            faces_detected=int(data.get("faces_detected") or 0),
            source_hash=data.get("source_hash"),
            error=ImageProblem(str(error.get("code")), str(error.get("detail") or ""))
            if isinstance(error, Mapping)
            else None,
        )


def enroll_results(data: Any) -> tuple[EnrollResult, ...]:
    """The per-image ``results`` of an enrollment answer (or of its problem body)."""
    items: Sequence[Any] = data if isinstance(data, list) else ()
    return tuple(EnrollResult.from_json(r) for r in items if isinstance(r, Mapping))


@dataclass(frozen=True, slots=True)
class Enrollment:
    """``POST .../faces``: one result per image, in upload order; ``attempts``: HTTP attempts it took."""

    collection: str
    subject_id: str
    enrolled: int
    rejected: int
    results: tuple[EnrollResult, ...]
    attempts: int = 1

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, attempts: int = 1) -> Enrollment:
        results = enroll_results(data.get("results"))
        enrolled = sum(1 for r in results if r.enrolled)
        return cls(
            collection=str(data.get("collection") or ""),
            subject_id=str(data.get("subject_id") or ""),
            enrolled=int(data.get("enrolled", enrolled)),
            rejected=int(data.get("rejected", len(results) - enrolled)),
            results=results,
            attempts=attempts,
        )


@dataclass(frozen=True, slots=True)
class Candidate:
    subject_id: str
    face_id: str
    distance: float
    similarity: float

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        return cls(
            subject_id=str(data["subject_id"]),
            face_id=str(data["face_id"]),
            distance=float(data["distance"]),
            similarity=float(data["similarity"]),
        )


@dataclass(frozen=True, slots=True)
class IdentifiedFace:
    """One face of the probe photo; ``match`` is the best candidate within the threshold, or None."""

    box: Box | None
    quality: FaceQuality | None
    candidates: tuple[Candidate, ...]
    match: Candidate | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IdentifiedFace:
        quality = data.get("quality")
        match = data.get("match")
        return cls(
            box=_box(data.get("box")),
            quality=FaceQuality.from_json(quality) if isinstance(quality, Mapping) else None,
            candidates=tuple(Candidate.from_json(c) for c in data.get("candidates", ())),
            match=Candidate.from_json(match) if isinstance(match, Mapping) else None,
        )


@dataclass(frozen=True, slots=True)
class Identification:
    collection: str
    threshold: float
    threshold_source: str
    faces: tuple[IdentifiedFace, ...]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Identification:
        return cls(
            collection=str(data["collection"]),
            threshold=float(data["threshold"]),
            threshold_source=str(data["threshold_source"]),
            faces=tuple(IdentifiedFace.from_json(f) for f in data.get("faces", ())),
        )


@dataclass(frozen=True, slots=True)
class Verification:
    """1:1: ``match`` is ``distance <= threshold``; ``face_id`` is the subject's closest face."""

    distance: float
    similarity: float
    threshold: float
    match: bool
    box_a: Box | None = None
    box_b: Box | None = None
    face_id: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Verification:
        return cls(
            distance=float(data["distance"]),
            similarity=float(data["similarity"]),
            threshold=float(data["threshold"]),
            match=bool(data["match"]),
            box_a=_box(data.get("box_a")),
            box_b=_box(data.get("box_b")),
            face_id=data.get("face_id"),
        )


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    threshold: float | None
    estimated_fpir: float | None
    genuine_accept_rate: float | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OperatingPoint:
        return cls(
            threshold=_float_or_none(data.get("threshold")),
            estimated_fpir=_float_or_none(data.get("estimated_fpir")),
            genuine_accept_rate=_float_or_none(data.get("genuine_accept_rate")),
        )


@dataclass(frozen=True, slots=True)
class Calibration:
    """``POST .../calibrate``: the threshold estimated from the collection's own faces."""

    collection: str
    target_fpir: float
    current: OperatingPoint | None
    recommended: OperatingPoint | None
    applied: bool
    identify_threshold: Threshold
    subjects: int
    faces: int
    warnings: tuple[str, ...]
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Calibration:
        current = data.get("current")
        recommended = data.get("recommended")
        return cls(
            collection=str(data["collection"]),
            target_fpir=float(data["target_fpir"]),
            current=OperatingPoint.from_json(current) if isinstance(current, Mapping) else None,
            recommended=OperatingPoint.from_json(recommended) if isinstance(recommended, Mapping) else None,
            applied=bool(data.get("applied")),
            identify_threshold=Threshold.from_json(data["identify_threshold"]),
            subjects=int(data.get("subjects", 0)),
            faces=int(data.get("faces", 0)),
            warnings=tuple(str(w) for w in data.get("warnings", ())),
            raw=dict(data),
        )


@dataclass(frozen=True, slots=True)
class Health:
    """``/healthz`` and ``/readyz``: ``status`` ok, ready or not_ready, and the checks behind it."""

    status: str
    checks: Mapping[str, Any]

    @property
    def ready(self) -> bool:
        return self.status in ("ok", "ready")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Health:
        return cls(status=str(data.get("status")), checks=dict(data.get("checks") or {}))

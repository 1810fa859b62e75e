"""Request and response bodies of the HTTP API (the OpenAPI document is generated from these)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from service.api.validation import clean_text
from service.domain.calibration import WithheldReason
from service.domain.thresholds import DefaultSource, InForceSource, ThresholdSource

CollectionName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
SubjectId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,127}$")]
# What the store generates (uuid4); anything else cannot name a face.
FaceId = Annotated[
    str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]
# sha256 of the file as 64 hex digits; stored lowercase.
SourceHash = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{64}$")]
# Free text that every store keeps and every response can carry: no NUL, no lone surrogate. The
# pattern documents the rule in the OpenAPI document; ``clean_text`` enforces it.
SAFE_TEXT_PATTERN = "^[^\\u0000\\ud800-\\udfff]*$"
Text = Annotated[
    str, AfterValidator(clean_text), WithJsonSchema({"type": "string", "pattern": SAFE_TEXT_PATTERN})
]
# Subject metadata: any JSON object whose keys and strings, at every depth, are such text
# (service/api/openapi_doc.py declares MetadataValue); depth and size are bounded by settings and
# checked by the subjects routes (service/api/validation.py check_metadata).
Metadata = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"pattern": SAFE_TEXT_PATTERN},
            "additionalProperties": {"$ref": "#/components/schemas/MetadataValue"},
            "description": "Free JSON object (nesting and size are bounded: FACES_MAX_METADATA_DEPTH, "
            "FACES_MAX_METADATA_BYTES)",
        }
    ),
]
# Every JSON request body: unknown members refused, and no type coercion (``true``, ``"0.5"`` are not
# numbers, ``5`` is not a string), so what the OpenAPI document says is what the service accepts.
REQUEST_BODY = ConfigDict(extra="forbid", strict=True)


def _round_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    return (round(box[0], 1), round(box[1], 1), round(box[2], 1), round(box[3], 1))


Box = Annotated[
    tuple[float, float, float, float],
    AfterValidator(_round_box),
    Field(description="x, y, width, height in pixels of the uploaded (EXIF-upright) image"),
]
Distance = Annotated[float, Field(ge=0.0, le=4.0, description="Squared L2 distance of unit vectors, [0, 4]")]
Similarity = Annotated[float, Field(ge=-1.0, le=1.0, description="Cosine similarity, 1 − distance/2")]


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    instance: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="validation_error: each invalid field (loc, msg, type)"
    )


class CollectionCreate(BaseModel):
    model_config = REQUEST_BODY

    name: CollectionName
    description: Annotated[Text, Field(max_length=1024)] = ""
    identify_threshold: Distance | None = Field(
        default=None, description="This collection's identify threshold (default: the service's)"
    )


class CollectionPatch(BaseModel):
    """Fields present are changed; ``identify_threshold: null`` returns to the service default."""

    model_config = REQUEST_BODY

    identify_threshold: Distance | None = None
    description: Annotated[Text, Field(max_length=1024)] | None = None


class IdentifyThresholdOut(BaseModel):
    value: Distance
    source: InForceSource = Field(
        description="collection / calibration: the collection's own; settings: "
        "FACES_DEFAULT_IDENTIFY_THRESHOLD; model_card_by_size: the model card's ladder read at the "
        "collection's numbers of subjects and faces (the threshold tightens as a collection grows, "
        "keeping the share of strangers given a name steady); model_card: the card's single value"
    )
    set_at: datetime | None = Field(description="When the collection's own threshold was set")
    read_at_subjects: int | None = Field(
        description="model_card_by_size: the number of subjects the ladder was read at (null otherwise)"
    )
    read_at_faces: int | None = Field(
        description="model_card_by_size: the number of enrolled faces it was read at (null otherwise)"
    )


class VerifyThresholdOut(BaseModel):
    value: Distance
    source: DefaultSource
    set_at: None = None


class IndexOut(BaseModel):
    """Which vector index serves the collection's searches (distances are exact either way)."""

    kind: str = Field(
        description="exact (flat scan), compressed (PQ4 or IVF codes, re-ranked exactly), or Milvus's"
    )
    state: Literal["ready", "building"] = Field(
        description="building: a compressed index trains in the background; the current one serves"
    )
    faces: int
    params: dict[str, int | str]


class CollectionOut(BaseModel):
    name: str
    description: str
    created_at: datetime
    subject_count: int
    face_count: int
    identify_threshold: IdentifyThresholdOut = Field(
        description="The threshold identify uses when a request gives none, and where it comes from"
    )
    verify_threshold: VerifyThresholdOut = Field(description="The threshold verify uses by default")
    index: IndexOut | None = Field(default=None, description="The vector index serving this collection")


class CollectionList(BaseModel):
    collections: list[CollectionOut]


class SubjectCreate(BaseModel):
    model_config = REQUEST_BODY

    subject_id: SubjectId
    name: Annotated[Text, Field(max_length=256)] | None = None
    metadata: Metadata = Field(default_factory=dict)


class SubjectPatch(BaseModel):
    model_config = REQUEST_BODY

    name: Annotated[Text, Field(max_length=256)] | None = None
    metadata: Metadata | None = None


class SubjectOut(BaseModel):
    subject_id: str
    name: str | None
    metadata: dict[str, Any]
    created_at: datetime
    face_count: int


class SubjectPage(BaseModel):
    items: list[SubjectOut]
    total: int
    offset: int
    limit: int


class FaceQualityOut(BaseModel):
    face_size_px: float
    detector_score: float
    sharpness: float
    passed: bool
    reasons: list[str]


class FaceOut(BaseModel):
    face_id: str
    # null: a free-standing face, indexed through the Rekognition-compatible API without a user.
    subject_id: str | None
    box: Box
    quality: dict[str, Any]
    source_hash: str | None
    filename: str | None
    created_at: datetime


class FaceList(BaseModel):
    faces: list[FaceOut]


class ImageErrorOut(BaseModel):
    code: str
    detail: str


class EnrollResult(BaseModel):
    filename: str
    status: Literal["enrolled", "rejected"]
    face_id: str | None = None
    box: Box | None = None
    quality: FaceQualityOut | None = None
    faces_detected: int = 0
    source_hash: str | None = None
    error: ImageErrorOut | None = None


class EnrollResponse(BaseModel):
    collection: str
    subject_id: str
    enrolled: int
    rejected: int
    results: list[EnrollResult]
    searchable: bool = Field(
        default=True,
        description="False: the faces are stored (their face ids are final) but the vector engine was "
        "unavailable; they become searchable by themselves as soon as it is back. Do not enroll again.",
    )


class DeletedPendingIndex(BaseModel):
    """A delete the store made while the vector engine was unavailable (200 instead of 204)."""

    deleted: Literal["collection", "subject", "face"]
    index_pending: Literal[True] = True
    detail: str = (
        "Deleted from the store: it no longer appears in any answer. The vector engine was unavailable; "
        "it drops the vectors by itself as soon as it is back. Do not retry."
    )


class CandidateOut(BaseModel):
    subject_id: str
    face_id: str
    distance: Distance
    similarity: Similarity


class IdentifiedFace(BaseModel):
    box: Box
    quality: FaceQualityOut
    candidates: list[CandidateOut]
    match: CandidateOut | None


class IdentifyResponse(BaseModel):
    collection: str
    threshold: Distance
    threshold_source: ThresholdSource
    faces: list[IdentifiedFace]


class OperatingPointOut(BaseModel):
    threshold: Distance
    estimated_fpir: float = Field(
        ge=0.0, le=1.0, description="Share of stranger probes (leave-one-subject-out) given a name"
    )
    genuine_accept_rate: float | None = Field(
        ge=0.0,
        le=1.0,
        description="Share of enrolled faces matched to their own subject by its other faces (null: no "
        "subject has two faces)",
    )


class CalibrationOut(BaseModel):
    collection: str
    target_fpir: float
    current: OperatingPointOut = Field(description="At the identify threshold in force before the call")
    recommended: OperatingPointOut | None = Field(
        description="At the recommended threshold: the one giving the target FPIR on these faces, capped "
        "at the verification threshold (see capped); null when these faces cannot support a "
        "recommendation (withheld says why)"
    )
    withheld: list[WithheldReason] = Field(
        default_factory=list,
        description="Why recommended is null (empty when it is given): too_few_subjects, fewer than 20 "
        "subjects to stand in for strangers; too_few_faces, fewer than 1/target_fpir faces, so the "
        "target cannot be measured",
    )
    capped: bool = Field(
        default=False,
        description="The estimate for the target was looser than the verification threshold, so that "
        "threshold is recommended instead (1:N never accepts what 1:1 would reject)",
    )
    applied: bool
    identify_threshold: IdentifyThresholdOut = Field(description="The threshold in force after the call")
    subjects: int
    faces: int
    impostor_probes: int = Field(description="Faces searched as strangers against the other subjects")
    genuine_probes: int = Field(description="Faces searched against their own subject's other faces")
    subjects_with_several_faces: int
    sampled: bool = Field(description="Probes were sampled (large collection)")
    seconds: float
    warnings: list[str]


class VerifyResponse(BaseModel):
    distance: Distance
    similarity: Similarity
    threshold: Distance
    match: bool
    box_a: Box | None = None
    box_b: Box | None = None
    face_id: str | None = Field(default=None, description="The subject's closest enrolled face")


class Health(BaseModel):
    status: Literal["ok", "ready", "not_ready"]
    checks: dict[str, Any] = Field(default_factory=dict)

"""Plain records the store hands out; the domain never sees SQLAlchemy rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, slots=True)
class CollectionRecord:
    pk: int
    name: str
    description: str
    created_at: datetime
    revision: int
    subject_count: int = 0
    face_count: int = 0
    # The collection's own identify threshold (None: the service default), its origin and date.
    identify_threshold: float | None = None
    identify_threshold_source: str | None = None  # "collection" | "calibration"
    identify_threshold_set_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CollectionLookup:
    """What identify needs of a collection: its key and own threshold, read in one cheap query."""

    pk: int
    identify_threshold: float | None
    identify_threshold_source: str | None


@dataclass(frozen=True, slots=True)
class SubjectRecord:
    pk: int
    collection_pk: int
    subject_id: str
    name: str | None
    metadata: dict[str, Any]
    created_at: datetime
    face_count: int = 0


@dataclass(frozen=True, slots=True)
class NewFace:
    """A face ready to persist: the embedding plus what the client should see again later."""

    embedding: NDArray[np.float32]
    box: tuple[float, float, float, float]
    quality: dict[str, Any]
    source_hash: str | None = None
    source_name: str | None = None
    thumbnail: bytes | None = field(default=None, repr=False)  # small aligned JPEG for the console
    external_image_id: str | None = None  # Rekognition's ExternalImageId
    image_id: str | None = None  # Rekognition's ImageId: one per uploaded image


@dataclass(frozen=True, slots=True)
class FaceRecord:
    pk: int  # int64 id shared with the FAISS index
    face_id: str  # public id
    collection_pk: int
    subject_pk: int | None  # None: a free-standing face (Rekognition API, no user)
    subject_id: str | None
    box: tuple[float, float, float, float]
    quality: dict[str, Any]
    source_hash: str | None
    source_name: str | None
    created_at: datetime
    embedding: NDArray[np.float32] | None = field(default=None, repr=False)
    external_image_id: str | None = None
    image_id: str | None = None

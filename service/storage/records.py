"""Plain records the store hands out; the domain never sees SQLAlchemy rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

# Who set a collection's own identify threshold: a client (create/PATCH) or POST .../calibrate.
OwnThresholdSource = Literal["collection", "calibration"]


@dataclass(frozen=True, slots=True)
class OwnThreshold:
    """A collection's own identify threshold as stored: value (d², [0, 4]), who set it and when."""

    value: float
    source: OwnThresholdSource
    set_at: datetime | None


def own_threshold(value: float | None, source: str | None, set_at: datetime | None) -> OwnThreshold | None:
    """The record of a collection row's three threshold columns (None: the row has no own threshold)."""
    if value is None:
        return None
    return OwnThreshold(float(value), "calibration" if source == "calibration" else "collection", set_at)


@dataclass(frozen=True, slots=True)
class CollectionRecord:
    pk: int
    name: str
    description: str
    created_at: datetime
    revision: int
    subject_count: int = 0
    face_count: int = 0
    own_threshold: OwnThreshold | None = None  # None: the service default applies


@dataclass(frozen=True, slots=True)
class CollectionLookup:
    """What identify needs of a collection: key, own threshold, subject and face counts, one row read."""

    pk: int
    own_threshold: OwnThreshold | None
    subject_count: int  # both kept by the store on every write: no scan
    face_count: int


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

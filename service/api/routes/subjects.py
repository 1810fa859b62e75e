"""Subjects: the people of a collection."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from service.api.deps import CollectionDep, ServicesDep
from service.api.problems import problem_responses
from service.api.schemas import SubjectCreate, SubjectId, SubjectOut, SubjectPage, SubjectPatch
from service.api.validation import check_metadata
from service.settings import Settings
from service.storage.records import SubjectRecord

router = APIRouter(prefix="/v1/collections/{collection}/subjects", tags=["subjects"])

# Past any real collection, and inside every store's 64-bit integers.
MAX_OFFSET = 2**31 - 1
_READ = problem_responses(401, 403, 404, 422, 503)
_WRITE = problem_responses(400, 401, 403, 404, 413, 422, 503)


def _check_metadata(metadata: dict[str, Any], settings: Settings) -> None:
    check_metadata(metadata, ["body", "metadata"], settings.max_metadata_bytes, settings.max_metadata_depth)


def subject_out(record: SubjectRecord) -> SubjectOut:
    return SubjectOut(
        subject_id=record.subject_id,
        name=record.name,
        metadata=record.metadata,
        created_at=record.created_at,
        face_count=record.face_count,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SubjectOut,
    responses={**_WRITE, **problem_responses(409)},
)
def create_subject(collection: CollectionDep, body: SubjectCreate, services: ServicesDep) -> SubjectOut:
    _check_metadata(body.metadata, services.settings)
    record = services.gallery.create_subject(collection, body.subject_id, body.name, body.metadata)
    return subject_out(record)


@router.get("", response_model=SubjectPage, responses=_READ)
def list_subjects(
    collection: CollectionDep,
    services: ServicesDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    id_prefix: Annotated[
        str | None, Query(max_length=128, description="Only subjects whose id starts with this (any case)")
    ] = None,
) -> SubjectPage:
    records, total = services.gallery.store.subjects.list_subjects(collection, offset, limit, id_prefix)
    return SubjectPage(items=[subject_out(r) for r in records], total=total, offset=offset, limit=limit)


@router.get("/{subject_id}", response_model=SubjectOut, responses=_READ)
def get_subject(collection: CollectionDep, subject_id: SubjectId, services: ServicesDep) -> SubjectOut:
    return subject_out(services.gallery.store.subjects.get_subject(collection, subject_id))


@router.patch("/{subject_id}", response_model=SubjectOut, responses=_WRITE)
def update_subject(
    collection: CollectionDep, subject_id: SubjectId, body: SubjectPatch, services: ServicesDep
) -> SubjectOut:
    if body.metadata is not None:
        _check_metadata(body.metadata, services.settings)
    changes = body.model_dump(exclude_unset=True)
    return subject_out(services.gallery.store.subjects.update_subject(collection, subject_id, changes))


@router.delete("/{subject_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_READ)
def delete_subject(collection: CollectionDep, subject_id: SubjectId, services: ServicesDep) -> Response:
    services.gallery.delete_subject(collection, subject_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

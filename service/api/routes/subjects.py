"""Subjects: the people of a collection."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse

from service.api.deps import CallerDep, CollectionDep, ServicesDep
from service.api.idempotency import IdempotencyKeyHeader, begin, released_on_failure
from service.api.problems import problem_responses
from service.api.schemas import SubjectCreate, SubjectId, SubjectOut, SubjectPage, SubjectPatch
from service.api.validation import check_metadata
from service.api.writes import DELETED_PENDING_INDEX, deleted_pending_index
from service.domain.gallery import SubjectRecord
from service.domain.idempotency import Answer, json_digest
from service.settings import Settings

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
def create_subject(
    request: Request,
    collection: CollectionDep,
    body: SubjectCreate,
    services: ServicesDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> SubjectOut | JSONResponse:
    _check_metadata(body.metadata, services.settings)
    write = begin(services.idempotency, request, caller, idempotency_key, json_digest(body.model_dump()))
    if isinstance(write, JSONResponse):
        return write
    with released_on_failure(write):
        record = services.gallery.create_subject(
            collection,
            body.subject_id,
            body.name,
            body.metadata,
            within=write.within(lambda r: Answer(201, subject_out(r).model_dump(mode="json")))
            if write is not None
            else None,
        )
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
    records, total = services.gallery.list_subjects(collection, offset, limit, id_prefix)
    return SubjectPage(items=[subject_out(r) for r in records], total=total, offset=offset, limit=limit)


@router.get("/{subject_id}", response_model=SubjectOut, responses=_READ)
def get_subject(collection: CollectionDep, subject_id: SubjectId, services: ServicesDep) -> SubjectOut:
    return subject_out(services.gallery.get_subject(collection, subject_id))


@router.patch("/{subject_id}", response_model=SubjectOut, responses=_WRITE)
def update_subject(
    collection: CollectionDep, subject_id: SubjectId, body: SubjectPatch, services: ServicesDep
) -> SubjectOut:
    if body.metadata is not None:
        _check_metadata(body.metadata, services.settings)
    changes = body.model_dump(exclude_unset=True)
    return subject_out(services.gallery.update_subject(collection, subject_id, changes))


@router.delete(
    "/{subject_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**_READ, **DELETED_PENDING_INDEX}
)
def delete_subject(collection: CollectionDep, subject_id: SubjectId, services: ServicesDep) -> Response:
    if services.gallery.delete_subject(collection, subject_id):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return deleted_pending_index("subject")

"""Subjects: the people of a collection."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from service.api.deps import CollectionDep, ServicesDep
from service.api.schemas import SubjectCreate, SubjectOut, SubjectPage, SubjectPatch
from service.storage.records import SubjectRecord

router = APIRouter(prefix="/v1/collections/{collection}/subjects", tags=["subjects"])


def subject_out(record: SubjectRecord) -> SubjectOut:
    return SubjectOut(
        subject_id=record.subject_id,
        name=record.name,
        metadata=record.metadata,
        created_at=record.created_at,
        face_count=record.face_count,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SubjectOut)
def create_subject(collection: CollectionDep, body: SubjectCreate, services: ServicesDep) -> SubjectOut:
    record = services.gallery.create_subject(collection, body.subject_id, body.name, body.metadata)
    return subject_out(record)


@router.get("", response_model=SubjectPage)
def list_subjects(
    collection: CollectionDep,
    services: ServicesDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    id_prefix: Annotated[
        str | None, Query(max_length=128, description="Only subjects whose id starts with this (any case)")
    ] = None,
) -> SubjectPage:
    records, total = services.gallery.store.list_subjects(collection, offset, limit, id_prefix)
    return SubjectPage(items=[subject_out(r) for r in records], total=total, offset=offset, limit=limit)


@router.get("/{subject_id}", response_model=SubjectOut)
def get_subject(collection: CollectionDep, subject_id: str, services: ServicesDep) -> SubjectOut:
    return subject_out(services.gallery.store.get_subject(collection, subject_id))


@router.patch("/{subject_id}", response_model=SubjectOut)
def update_subject(
    collection: CollectionDep, subject_id: str, body: SubjectPatch, services: ServicesDep
) -> SubjectOut:
    changes = body.model_dump(exclude_unset=True)
    return subject_out(services.gallery.store.update_subject(collection, subject_id, changes))


@router.delete("/{subject_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_subject(collection: CollectionDep, subject_id: str, services: ServicesDep) -> Response:
    services.gallery.delete_subject(collection, subject_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

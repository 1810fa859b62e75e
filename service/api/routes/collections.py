"""Collections: isolated galleries."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from service.api.deps import CallerDep, CollectionDep, ServicesDep
from service.api.problems import problem_responses
from service.api.schemas import CollectionCreate, CollectionList, CollectionOut
from service.storage.records import CollectionRecord

router = APIRouter(prefix="/v1/collections", tags=["collections"])
_ONE = problem_responses(401, 403, 404, 422, 503)


def collection_out(record: CollectionRecord) -> CollectionOut:
    return CollectionOut(
        name=record.name,
        description=record.description,
        created_at=record.created_at,
        subject_count=record.subject_count,
        face_count=record.face_count,
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CollectionOut,
    responses=problem_responses(400, 401, 403, 409, 413, 422, 503),
)
def create_collection(body: CollectionCreate, services: ServicesDep, caller: CallerDep) -> CollectionOut:
    caller.check(body.name)
    return collection_out(services.gallery.create_collection(body.name, body.description))


@router.get("", response_model=CollectionList, responses=problem_responses(401, 503))
def list_collections(services: ServicesDep, caller: CallerDep) -> CollectionList:
    records = services.gallery.store.list_collections()
    return CollectionList(collections=[collection_out(r) for r in records if caller.allows(r.name)])


@router.get("/{collection}", response_model=CollectionOut, responses=_ONE)
def get_collection(collection: CollectionDep, services: ServicesDep) -> CollectionOut:
    return collection_out(services.gallery.store.get_collection(collection))


@router.delete("/{collection}", status_code=status.HTTP_204_NO_CONTENT, responses=_ONE)
def delete_collection(collection: CollectionDep, services: ServicesDep) -> Response:
    services.gallery.delete_collection(collection)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

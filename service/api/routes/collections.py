"""Collections: isolated galleries, each with the identify threshold in force and its origin."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse

from service.api.deps import CallerDep, CollectionDep, ServicesDep
from service.api.idempotency import IdempotencyKeyHeader, begin, released_on_failure
from service.api.problems import problem_responses
from service.api.schemas import (
    CalibrationOut,
    CollectionCreate,
    CollectionList,
    CollectionOut,
    CollectionPatch,
    IdentifyThresholdOut,
    IndexOut,
    OperatingPointOut,
    Problem,
    VerifyThresholdOut,
)
from service.api.writes import DELETED_PENDING_INDEX, deleted_pending_index
from service.domain.calibration import OperatingPoint, calibrate_collection
from service.domain.gallery import CollectionRecord
from service.domain.idempotency import Answer, json_digest
from service.domain.services import Services
from service.domain.thresholds import ThresholdInForce

router = APIRouter(prefix="/v1/collections", tags=["collections"])
_ONE = problem_responses(401, 403, 404, 422, 503)


def identify_threshold_out(threshold: ThresholdInForce) -> IdentifyThresholdOut:
    assert threshold.source != "request"
    return IdentifyThresholdOut(
        value=threshold.value,
        source=threshold.source,
        set_at=threshold.set_at,
        read_at_subjects=threshold.read_at_subjects,
        read_at_faces=threshold.read_at_faces,
    )


def collection_out(record: CollectionRecord, services: Services) -> CollectionOut:
    thresholds = services.thresholds
    identify = thresholds.for_collection(record.own_threshold, record.subject_count, record.face_count)
    verify = thresholds.verify_default
    assert verify.source in ("model_card", "settings")
    return CollectionOut(
        name=record.name,
        description=record.description,
        created_at=record.created_at,
        subject_count=record.subject_count,
        face_count=record.face_count,
        identify_threshold=identify_threshold_out(identify),
        verify_threshold=VerifyThresholdOut(value=verify.value, source=verify.source),
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CollectionOut,
    responses=problem_responses(400, 401, 403, 409, 413, 422, 503),
)
def create_collection(
    request: Request,
    body: CollectionCreate,
    services: ServicesDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> CollectionOut | JSONResponse:
    caller.check(body.name)
    write = begin(services.idempotency, request, caller, idempotency_key, json_digest(body.model_dump()))
    if isinstance(write, JSONResponse):
        return write

    def answer(record: CollectionRecord) -> Answer:
        return Answer(201, collection_out(record, services).model_dump(mode="json"))

    with released_on_failure(write):
        record = services.gallery.create_collection(
            body.name,
            body.description,
            body.identify_threshold,
            within=write.within(answer) if write is not None else None,
        )
    return collection_out(record, services)


@router.get("", response_model=CollectionList, responses=problem_responses(401, 503))
def list_collections(services: ServicesDep, caller: CallerDep) -> CollectionList:
    records = services.gallery.list_collections()
    return CollectionList(collections=[collection_out(r, services) for r in records if caller.allows(r.name)])


@router.get("/{collection}", response_model=CollectionOut, responses=_ONE)
def get_collection(collection: CollectionDep, services: ServicesDep) -> CollectionOut:
    """The collection, with the vector index serving it (exact or compressed, and its state)."""
    record = services.gallery.get_collection(collection)
    info = services.gallery.index_info(record.pk)
    out = collection_out(record, services)
    out.index = IndexOut(
        kind=info.kind,
        state="building" if info.state == "building" else "ready",
        faces=info.faces,
        params=info.params,
    )
    return out


@router.patch(
    "/{collection}",
    response_model=CollectionOut,
    responses=problem_responses(400, 401, 403, 404, 413, 422, 503),
)
def patch_collection(
    collection: CollectionDep, body: CollectionPatch, services: ServicesDep
) -> CollectionOut:
    """Change the description or the identify threshold (``null``: back to the service default)."""
    changes = body.model_dump(include=body.model_fields_set)
    if changes.get("description", "") is None:
        changes["description"] = ""
    return collection_out(services.gallery.update_collection(collection, changes), services)


@router.delete(
    "/{collection}", status_code=status.HTTP_204_NO_CONTENT, responses={**_ONE, **DELETED_PENDING_INDEX}
)
def delete_collection(collection: CollectionDep, services: ServicesDep) -> Response:
    if services.gallery.delete_collection(collection):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return deleted_pending_index("collection")


def operating_point_out(point: OperatingPoint) -> OperatingPointOut:
    return OperatingPointOut(
        threshold=round(point.threshold, 6),
        estimated_fpir=round(point.estimated_fpir, 6),
        genuine_accept_rate=round(point.genuine_accept_rate, 6)
        if point.genuine_accept_rate is not None
        else None,
    )


@router.post(
    "/{collection}/calibrate",
    response_model=CalibrationOut,
    responses={
        **problem_responses(400, 401, 403, 404, 413, 503),
        422: {"model": Problem, "description": "Invalid parameters, or too few subjects/faces to calibrate"},
        429: {"model": Problem, "description": "Another calibration is running"},
    },
)
async def calibrate(
    collection: CollectionDep,
    services: ServicesDep,
    target_fpir: Annotated[
        float,
        Query(
            gt=0.0,
            lt=1.0,
            description="Share of strangers allowed a (wrong) name: false-positive identification rate",
        ),
    ] = 0.01,
    apply: Annotated[bool, Query(description="Store the recommended threshold as the collection's")] = False,
) -> CalibrationOut:
    """Estimate the identify threshold for ``target_fpir`` from the collection's own faces.

    Each subject's faces are searched against the *other* subjects (leave-one-subject-out) as if they
    were strangers; the threshold letting ``target_fpir`` of them through is recommended, with the
    estimated FPIR and genuine accept rate at the current and at the recommended threshold.
    """
    outcome = await asyncio.to_thread(
        calibrate_collection,
        services.gallery,
        services.thresholds,
        services.calibration,
        collection,
        target_fpir=target_fpir,
        apply=apply,
    )
    result = outcome.result
    return CalibrationOut(
        collection=collection,
        target_fpir=target_fpir,
        current=operating_point_out(result.current),
        recommended=operating_point_out(result.recommendation) if result.recommendation else None,
        withheld=result.withheld,
        capped=result.capped,
        applied=outcome.applied,
        identify_threshold=identify_threshold_out(outcome.after),
        subjects=result.subjects,
        faces=result.faces,
        impostor_probes=result.impostor_probes,
        genuine_probes=result.genuine_probes,
        subjects_with_several_faces=result.subjects_with_several_faces,
        sampled=result.sampled,
        seconds=round(result.seconds, 4),
        warnings=result.warnings,
    )

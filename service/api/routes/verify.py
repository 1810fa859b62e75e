"""1:1 verification."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile

from service.api.deps import CallerDep, CollectionDep, ServicesDep
from service.api.problems import problem_responses
from service.api.schemas import SubjectId, VerifyResponse
from service.api.uploads import read_upload
from service.domain.verify import Verdict, verify_pair, verify_subject

router = APIRouter(tags=["verify"])

ThresholdQuery = Annotated[
    float | None, Query(ge=0.0, le=4.0, description="Max squared distance for a match (default: model's)")
]


def verdict_out(v: Verdict) -> VerifyResponse:
    return VerifyResponse(
        distance=round(v.distance, 6),
        similarity=round(v.similarity, 6),
        threshold=v.threshold,
        match=v.match,
        box_a=v.face_a.box,
        box_b=v.face_b.box if v.face_b is not None else None,
        face_id=v.face_id,
    )


@router.post(
    "/v1/verify", response_model=VerifyResponse, responses=problem_responses(400, 401, 413, 415, 422, 503)
)
async def verify_images(
    services: ServicesDep,
    _caller: CallerDep,
    image_a: Annotated[UploadFile, File()],
    image_b: Annotated[UploadFile, File()],
    threshold: ThresholdQuery = None,
) -> VerifyResponse:
    limit = services.settings.max_upload_bytes
    a = await read_upload(image_a, limit, strict=True)
    b = await read_upload(image_b, limit, strict=True)
    verdict = await verify_pair(services.engine, a, b, threshold=services.thresholds.verify(threshold).value)
    return verdict_out(verdict)


@router.post(
    "/v1/collections/{collection}/subjects/{subject_id}/verify",
    response_model=VerifyResponse,
    responses=problem_responses(400, 401, 403, 404, 413, 415, 422, 503),
)
async def verify_against_subject(
    collection: CollectionDep,
    subject_id: SubjectId,
    services: ServicesDep,
    image: Annotated[UploadFile, File()],
    threshold: ThresholdQuery = None,
) -> VerifyResponse:
    data = await read_upload(image, services.settings.max_upload_bytes, strict=True)
    verdict = await verify_subject(
        services.engine,
        services.gallery,
        collection,
        subject_id,
        data,
        threshold=services.thresholds.verify(threshold).value,
    )
    return verdict_out(verdict)

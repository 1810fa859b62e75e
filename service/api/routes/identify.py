"""1:N identification."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.exceptions import RequestValidationError

from service.api.deps import CollectionDep, ServicesDep
from service.api.problems import problem_responses
from service.api.schemas import CandidateOut, FaceQualityOut, IdentifiedFace, IdentifyResponse
from service.api.uploads import read_upload
from service.domain.enroll import quality_dict
from service.domain.ranking import Candidate
from service.domain.search import identify

router = APIRouter(prefix="/v1/collections/{collection}", tags=["identify"])


def candidate_out(c: Candidate) -> CandidateOut:
    return CandidateOut(
        subject_id=c.subject_id,
        face_id=c.face_id,
        distance=round(c.distance, 6),
        similarity=round(c.similarity, 6),
    )


@router.post(
    "/identify",
    response_model=IdentifyResponse,
    responses=problem_responses(400, 401, 403, 404, 413, 415, 422, 503),
)
async def identify_faces(
    collection: CollectionDep,
    services: ServicesDep,
    image: Annotated[UploadFile, File(description="A JPEG/PNG/WebP photo")],
    top_k: Annotated[int | None, Query(ge=1, le=100, description="Candidates per face (default 5)")] = None,
    threshold: Annotated[
        float | None,
        Query(
            ge=0.0,
            le=4.0,
            description="Max squared distance for a match (default: the collection's identify threshold)",
        ),
    ] = None,
    max_faces: Annotated[
        int | None, Query(ge=1, le=100, description="Faces to identify, largest first")
    ] = None,
) -> IdentifyResponse:
    settings = services.settings
    if top_k is not None and top_k > settings.max_top_k:
        # FACES_MAX_TOP_K may lower the schema's bound of 100; reported like any other bad query value.
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "top_k"),
                    "msg": f"Input should be less than or equal to {settings.max_top_k}",
                    "type": "less_than_equal",
                }
            ]
        )
    data = await read_upload(image, settings.max_upload_bytes, strict=True)
    outcome = await identify(
        services.engine,
        services.gallery,
        collection,
        data,
        top_k=top_k or settings.default_top_k,
        thresholds=services.thresholds,
        requested_threshold=threshold,
        max_faces=max_faces or settings.default_max_faces,
    )
    return IdentifyResponse(
        collection=collection,
        threshold=outcome.threshold.value,
        threshold_source=outcome.threshold.source,
        faces=[
            IdentifiedFace(
                box=r.face.box,
                quality=FaceQualityOut(**quality_dict(r.face.analyzed)),
                candidates=[candidate_out(c) for c in r.candidates],
                match=candidate_out(r.match) if r.match is not None else None,
            )
            for r in outcome.faces
        ],
    )

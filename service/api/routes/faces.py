"""Enrollment and enrolled faces."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status
from fastapi.responses import JSONResponse

from service.api.deps import CollectionDep, ServicesDep
from service.api.problems import problem_response, problem_responses
from service.api.schemas import (
    EnrollResponse,
    EnrollResult,
    FaceId,
    FaceList,
    FaceOut,
    FaceQualityOut,
    ImageErrorOut,
    Problem,
    SourceHash,
    SubjectId,
)
from service.api.uploads import read_upload
from service.api.validation import check_filename
from service.domain.enroll import (
    FaceSelection,
    ImageOutcome,
    UploadedImage,
    all_rejected_error,
    enroll_images,
    quality_dict,
)
from service.errors import InvalidRequest, SubjectNotFound, ThumbnailsDisabled
from service.storage.records import FaceRecord

router = APIRouter(prefix="/v1/collections/{collection}", tags=["faces"])
_READ = problem_responses(401, 403, 404, 422, 503)


def face_out(record: FaceRecord) -> FaceOut:
    return FaceOut(
        face_id=record.face_id,
        subject_id=record.subject_id,
        box=record.box,
        quality=record.quality,
        source_hash=record.source_hash,
        filename=record.source_name,
        created_at=record.created_at,
    )


def _result(outcome: ImageOutcome) -> EnrollResult:
    face = outcome.face
    return EnrollResult(
        filename=outcome.filename,
        status="enrolled" if outcome.record is not None else "rejected",
        face_id=outcome.record.face_id if outcome.record is not None else None,
        box=face.face.box if face is not None else None,
        quality=FaceQualityOut(**quality_dict(face)) if face is not None else None,
        faces_detected=outcome.faces_detected,
        source_hash=outcome.source_hash,
        error=ImageErrorOut(code=outcome.error.code, detail=outcome.error.detail) if outcome.error else None,
    )


@router.post(
    "/subjects/{subject_id}/faces",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrollResponse,
    responses={
        **problem_responses(400, 401, 403, 404, 413, 415, 503),
        422: {
            "model": Problem,
            "description": "Invalid parameters, or no image could be enrolled (per-image results inside)",
        },
    },
)
async def enroll_faces(
    request: Request,
    collection: CollectionDep,
    subject_id: SubjectId,
    services: ServicesDep,
    images: Annotated[list[UploadFile], File(description="One or more JPEG/PNG/WebP images")],
    source_hash: Annotated[
        list[SourceHash] | None,
        Form(description="Optional client-side sha256 per image, in order (64 hex digits)"),
    ] = None,
    create_subject: Annotated[bool, Query(description="Create the subject if it does not exist")] = False,
    face_selection: Annotated[
        FaceSelection, Query(description="strict: exactly one face per image; largest: take the largest")
    ] = FaceSelection.strict,
) -> EnrollResponse | JSONResponse:
    settings = services.settings
    if len(images) > settings.max_images_per_request:
        raise InvalidRequest(f"At most {settings.max_images_per_request} images per request.")
    hashes = source_hash or []
    if hashes and len(hashes) != len(images):
        raise InvalidRequest("Give one source_hash per image, or none.")
    for i, upload in enumerate(images):
        check_filename(upload.filename, ["body", "images", i])
    uploads = [
        UploadedImage(
            filename=upload.filename or f"image-{i}",
            data=await read_upload(upload, settings.max_upload_bytes),
            source_hash=(hashes[i].lower() if hashes else None),
        )
        for i, upload in enumerate(images)
    ]
    try:
        outcomes = await enroll_images(
            services.engine,
            services.gallery,
            collection,
            subject_id,
            uploads,
            selection=face_selection,
            create_subject=create_subject,
            max_upload_bytes=settings.max_upload_bytes,
            keep_thumbnails=settings.thumbnails_enabled,
        )
    except SubjectNotFound as exc:  # the one route where the fix is a query parameter away
        raise SubjectNotFound(
            f"Subject '{subject_id}' not found in '{collection}'; add create_subject=true to the query "
            "to create it with these faces."
        ) from exc
    results = [_result(o) for o in outcomes]
    enrolled = sum(1 for r in results if r.status == "enrolled")
    body = EnrollResponse(
        collection=collection,
        subject_id=subject_id,
        enrolled=enrolled,
        rejected=len(results) - enrolled,
        results=results,
    )
    if enrolled:
        return body
    error = all_rejected_error(outcomes)
    extra = {**error.extra, **body.model_dump(mode="json")}
    return problem_response(error.status, error.code, error.title, error.detail, request, **extra)


@router.get("/subjects/{subject_id}/faces", response_model=FaceList, responses=_READ)
def list_faces(collection: CollectionDep, subject_id: SubjectId, services: ServicesDep) -> FaceList:
    return FaceList(
        faces=[face_out(r) for r in services.gallery.store.faces.list_faces(collection, subject_id)]
    )


@router.get("/faces/{face_id}", response_model=FaceOut, responses=_READ)
def get_face(collection: CollectionDep, face_id: FaceId, services: ServicesDep) -> FaceOut:
    return face_out(services.gallery.store.faces.get_face(collection, face_id))


@router.delete("/faces/{face_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_READ)
def delete_face(collection: CollectionDep, face_id: FaceId, services: ServicesDep) -> Response:
    services.gallery.delete_face(collection, face_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/faces/{face_id}/thumbnail",
    response_class=Response,
    responses={
        **_READ,
        200: {"content": {"image/jpeg": {}}, "description": "The face's aligned crop, a small JPEG"},
        404: {"model": Problem, "description": "No such face, no thumbnail kept, or thumbnails turned off"},
    },
)
def face_thumbnail(collection: CollectionDep, face_id: FaceId, services: ServicesDep) -> Response:
    """The aligned crop kept at enrollment (unless FACES_THUMBNAILS_ENABLED=false)."""
    if not services.settings.thumbnails_enabled:
        raise ThumbnailsDisabled("Face thumbnails are turned off on this server.")
    jpeg = services.gallery.store.faces.get_thumbnail(collection, face_id)
    # Private: the crop is a face; a face id never gets other content, so it may be cached a while.
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

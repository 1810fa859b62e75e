"""Enrollment and enrolled faces."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile, status
from fastapi.responses import JSONResponse

from service.api.deps import CallerDep, CollectionDep, ServicesDep
from service.api.idempotency import IdempotencyKeyHeader, begin, released_on_failure
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
from service.api.writes import DELETED_PENDING_INDEX, deleted_pending_index
from service.domain.enroll import (
    Enrollment,
    FaceSelection,
    ImageOutcome,
    UploadedImage,
    all_rejected_error,
    enroll_images,
    quality_dict,
)
from service.domain.gallery import FaceRecord
from service.domain.idempotency import Answer, parts_digest
from service.errors import InvalidRequest, SubjectNotFound, ThumbnailsDisabled

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
        **problem_responses(400, 401, 403, 404, 409, 413, 415, 503),
        422: {
            "model": Problem,
            "description": "Invalid parameters, no image could be enrolled (per-image results inside), or "
            "an Idempotency-Key used before for another request",
        },
    },
)
async def enroll_faces(
    request: Request,
    collection: CollectionDep,
    subject_id: SubjectId,
    services: ServicesDep,
    caller: CallerDep,
    images: Annotated[list[UploadFile], File(description="One or more JPEG/PNG/WebP images")],
    source_hash: Annotated[
        list[SourceHash] | None,
        Form(description="Optional client-side sha256 per image, in order (64 hex digits)"),
    ] = None,
    create_subject: Annotated[bool, Query(description="Create the subject if it does not exist")] = False,
    face_selection: Annotated[
        FaceSelection, Query(description="strict: exactly one face per image; largest: take the largest")
    ] = FaceSelection.strict,
    idempotency_key: IdempotencyKeyHeader = None,
) -> EnrollResponse | JSONResponse:
    """Enroll faces; ``searchable: false`` in the answer: stored (face ids final), the vector engine
    was unavailable and indexes them by itself as soon as it is back. Send an ``Idempotency-Key``
    to make retries safe."""
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
    parts = [("images", u.filename, u.data) for u in uploads]
    parts += [("source_hash", h.lower(), b"") for h in hashes]
    write = await asyncio.to_thread(
        begin, services.idempotency, request, caller, idempotency_key, parts_digest(parts)
    )
    if isinstance(write, JSONResponse):
        return write

    def answer(enrollment: Enrollment) -> Answer:
        return Answer(201, _response(collection, subject_id, enrollment).model_dump(mode="json"))

    with released_on_failure(write):
        try:
            enrollment = await enroll_images(
                services.engine,
                services.gallery,
                collection,
                subject_id,
                uploads,
                selection=face_selection,
                create_subject=create_subject,
                max_upload_bytes=settings.max_upload_bytes,
                keep_thumbnails=settings.thumbnails_enabled,
                idempotent=write,
                render=answer,
            )
        except SubjectNotFound as exc:  # the one route where the fix is a query parameter away
            raise SubjectNotFound(
                f"Subject '{subject_id}' not found in '{collection}'; add create_subject=true to the query "
                "to create it with these faces."
            ) from exc
    body = _response(collection, subject_id, enrollment)
    if body.enrolled:
        return body
    if write is not None:  # nothing stored: a retry with the key runs anew
        await asyncio.to_thread(write.release)
    error = all_rejected_error(enrollment.images)
    extra = {**error.extra, **body.model_dump(mode="json", exclude={"searchable"})}
    return problem_response(error.status, error.code, error.title, error.detail, request, **extra)


def _response(collection: str, subject_id: str, enrollment: Enrollment) -> EnrollResponse:
    results = [_result(o) for o in enrollment.images]
    enrolled = sum(1 for r in results if r.status == "enrolled")
    return EnrollResponse(
        collection=collection,
        subject_id=subject_id,
        enrolled=enrolled,
        rejected=len(results) - enrolled,
        results=results,
        searchable=enrollment.searchable,
    )


@router.get("/subjects/{subject_id}/faces", response_model=FaceList, responses=_READ)
def list_faces(collection: CollectionDep, subject_id: SubjectId, services: ServicesDep) -> FaceList:
    return FaceList(faces=[face_out(r) for r in services.gallery.list_faces(collection, subject_id)])


@router.get("/faces/{face_id}", response_model=FaceOut, responses=_READ)
def get_face(collection: CollectionDep, face_id: FaceId, services: ServicesDep) -> FaceOut:
    return face_out(services.gallery.get_face(collection, face_id))


@router.delete(
    "/faces/{face_id}", status_code=status.HTTP_204_NO_CONTENT, responses={**_READ, **DELETED_PENDING_INDEX}
)
def delete_face(collection: CollectionDep, face_id: FaceId, services: ServicesDep) -> Response:
    if services.gallery.delete_face(collection, face_id):
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return deleted_pending_index("face")


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
    jpeg = services.gallery.get_thumbnail(collection, face_id)
    # Private: the crop is a face; a face id never gets other content, so it may be cached a while.
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

"""DetectFaces and CompareFaces: images only, nothing stored.

CompareFaces' Similarity is anchored on the verification threshold in force (/v1/verify's), so
its default SimilarityThreshold of 80 accepts exactly the pairs /v1/verify calls a match.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from service.api.rekognition.common import image_bytes, max_distance, quality_level
from service.api.rekognition.errors import InvalidParameter
from service.api.rekognition.gateway import Context, Handler
from service.api.rekognition.shapes import bounding_box, compared_face, confidence, face_detail
from service.domain.face_index import QualityLevel, detect_faces, quality_rejections
from service.domain.faces import squared_distance
from service.domain.similarity import similarity_percent

MAX_TARGET_FACES = 100  # AWS compares the source face with the 100 largest faces of the target


async def detect(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    services = context.services
    image = await detect_faces(services.engine, image_bytes(params), services.settings.max_image_pixels)
    return {"FaceDetails": [face_detail(face, image.size) for face in image.faces]}


async def compare_faces(context: Context, params: dict[str, Any]) -> dict[str, Any]:
    services = context.services
    engine = services.engine
    limit = services.settings.max_image_pixels
    source, target = await asyncio.gather(
        detect_faces(engine, image_bytes(params, "SourceImage"), limit),
        detect_faces(engine, image_bytes(params, "TargetImage"), limit),
    )
    level = quality_level(params, QualityLevel.NONE)
    config = engine.lanes.analyzer.quality
    sources = [f for f in source.faces if not quality_rejections(f, config, level)]
    if not sources:
        raise InvalidParameter(
            "There are no faces in the source image"
            + ("." if not source.faces else " that pass the QualityFilter.")
        )
    targets = [f for f in target.faces if not quality_rejections(f, config, level)][:MAX_TARGET_FACES]
    embedded = await engine.embed([sources[0], *targets])
    probe, others = embedded[0], embedded[1:]
    threshold = services.thresholds.verify(None).value
    accept = max_distance(params, "SimilarityThreshold", threshold)
    matches: list[dict[str, Any]] = []
    unmatched: list[dict[str, Any]] = []
    for face in others:
        distance = squared_distance(float(np.dot(probe.embedding, face.embedding)))
        shape = compared_face(face.analyzed, target.size)
        if distance <= accept:
            matches.append({"Similarity": similarity_percent(distance, threshold), "Face": shape})
        else:
            unmatched.append(shape)
    matches.sort(key=lambda m: -float(m["Similarity"]))
    return {
        "SourceImageFace": {
            "BoundingBox": bounding_box(probe.box, source.size),
            "Confidence": confidence(probe.analyzed),
        },
        "FaceMatches": matches,
        "UnmatchedFaces": unmatched,
    }


HANDLERS: dict[str, Handler] = {"DetectFaces": detect, "CompareFaces": compare_faces}

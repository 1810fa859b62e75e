"""Answers to writes the store made while the vector engine was unavailable.

The store is the source of truth: such a write is done, and acknowledged as done, never as a 503 a
client would retry. A delete answers 200 with a ``DeletedPendingIndex`` body instead of 204 (the
deleted faces never appear in an answer meanwhile: hits are resolved through the store); an
enrollment answers 201 with ``searchable: false`` (service/api/routes/faces.py).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse

from service.api.schemas import DeletedPendingIndex

DELETED_PENDING_INDEX: dict[int | str, dict[str, Any]] = {
    200: {
        "model": DeletedPendingIndex,
        "description": "Deleted from the store while the vector engine was unavailable: it catches up "
        "by itself (no retry needed)",
    },
    204: {"description": "Deleted"},
}


def deleted_pending_index(what: Literal["collection", "subject", "face"]) -> JSONResponse:
    return JSONResponse(DeletedPendingIndex(deleted=what).model_dump(mode="json"), status_code=200)

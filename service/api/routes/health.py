"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from service.api.deps import ServicesDep
from service.api.problems import problem_responses
from service.api.schemas import Health
from service.domain.services import Services
from service.errors import ServiceError

logger = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive and serving HTTP."""
    return Health(status="ok")


def _readiness(services: Services | None) -> tuple[bool, dict[str, object]]:
    if services is None:
        return False, {"model": "loading"}
    checks: dict[str, object] = {"model": services.card.name, "execution_provider": services.provider}
    ready = True
    checks["vector_engine"] = services.gallery.vector_engine
    # Writes this replica stored while the engine was down, not yet in it (pushed once it answers).
    pending = services.gallery.pending_writes()
    checks["index_pending_writes"] = pending
    try:
        services.gallery.ping_store()
        checks["store"] = "ok"
        stale = services.gallery.index_out_of_sync()
        checks["index"] = "in_sync" if not stale else f"out_of_sync: {stale}"
        # Collections not on the exact scan (compressed, or one building in the background).
        checks["compressed_indexes"] = services.gallery.compressed_index_states()
        ready = not stale and pending == 0
    except SQLAlchemyError:
        logger.warning("readiness: store unreachable", exc_info=True)
        checks["store"] = "unreachable"
        ready = False
    except ServiceError:  # the vector engine (Milvus) did not answer
        logger.warning("readiness: vector engine unreachable", exc_info=True)
        checks["index"] = "unreachable"
        ready = False
    return ready, checks


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(request: Request) -> Response:
    """Model loaded, store reachable, every index the size of its collection in the store, and no
    stored write waiting for the vector engine (``checks.index_pending_writes``)."""
    services: Services | None = getattr(request.app.state, "services", None)
    ready, checks = await asyncio.to_thread(_readiness, services)
    body = Health(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **problem_responses(401, 403, 503),
    },
)
def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics. With API keys on: an all-collections key or FACES_METRICS_KEY."""
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)

"""The FastAPI application: ``create_app(settings)``; long-lived objects live in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api.middleware import BodySizeLimit, RequestMetrics
from service.api.problems import install_problem_handlers
from service.api.routes import collections, faces, health, identify, subjects, verify
from service.bootstrap import build_services
from service.domain.gallery import Gallery
from service.observability import Metrics
from service.settings import Settings

logger = logging.getLogger(__name__)


async def _reconcile_periodically(gallery: Gallery, interval_s: float) -> None:
    """Repair writes that reached the store but not the vector engine (another replica's crash)."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            report = await asyncio.to_thread(gallery.reconcile_index)
        except Exception:  # a pass that fails (engine down) is retried at the next interval
            logger.warning("index reconciliation failed; retrying in %.0fs", interval_s, exc_info=True)
            continue
        if report.changed:
            logger.warning("index reconciliation: %d inserted, %d deleted", report.inserted, report.deleted)


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await asyncio.to_thread(build_services, settings, metrics)
        await services.engine.start()
        app.state.services = services
        interval = settings.index_reconcile_interval_s
        reconciler = (
            asyncio.create_task(_reconcile_periodically(services.gallery, interval)) if interval > 0 else None
        )
        logger.info("ready on %s:%d", settings.host, settings.port)
        try:
            yield
        finally:
            app.state.services = None
            if reconciler is not None:
                reconciler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reconciler
            await services.engine.stop()
            await asyncio.to_thread(services.gallery.indexes.close)
            services.gallery.store.close()
            logger.info("stopped cleanly; index closed (FAISS snapshots saved)")

    app = FastAPI(
        title="Faces",
        version="0.1.0",
        summary="Self-hosted face recognition: enrollment, 1:N identification, 1:1 verification.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.services = None
    install_problem_handlers(app)
    for module in (collections, subjects, faces, identify, verify, health):
        app.include_router(module.router)
    request_limit = settings.max_upload_bytes * settings.max_images_per_request + 1024 * 1024
    app.add_middleware(BodySizeLimit, max_bytes=request_limit)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app

"""The FastAPI application: ``create_app(settings)``; long-lived objects live in the lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api.middleware import BodySizeLimit, RequestMetrics
from service.api.problems import install_problem_handlers
from service.api.routes import collections, faces, health, identify, subjects, verify
from service.bootstrap import build_services
from service.errors import InvalidModelCard
from service.observability import Metrics
from service.settings import Settings

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            services = await asyncio.to_thread(build_services, settings, metrics)
        except InvalidModelCard as exc:  # the one line an operator needs, before the traceback
            logger.error("refusing to start: %s", exc.detail)
            raise
        await services.engine.start()
        app.state.services = services
        logger.info("ready on %s:%d", settings.host, settings.port)
        try:
            yield
        finally:
            app.state.services = None
            await services.engine.stop()
            await asyncio.to_thread(services.gallery.indexes.save_snapshots)
            services.gallery.store.close()
            logger.info("stopped cleanly; index snapshots saved")

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

"""The FastAPI application: ``create_app(settings)``; long-lived objects live in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from service.api.auth import ApiKeyAuth, KeyRing
from service.api.content_type import require_json_content_type
from service.api.middleware import BodySizeLimit, InternalErrorGuard, RequestMetrics
from service.api.openapi_doc import with_links
from service.api.problems import install_problem_handlers, problem_openapi
from service.api.rekognition import HANDLERS, MAX_BODY_BYTES, RekognitionGateway, served_model
from service.api.routes import collections, faces, health, identify, subjects, verify
from service.bootstrap import build_services
from service.console import mount_console
from service.domain.gallery import Gallery
from service.domain.idempotency import IdempotencyKeys
from service.errors import InvalidModelCard
from service.observability import Metrics
from service.settings import Settings

logger = logging.getLogger(__name__)

IDEMPOTENCY_PURGE_INTERVAL_S = 600.0


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


async def _push_pending_writes(gallery: Gallery, interval_s: float) -> None:
    """Writes stored while the vector engine was down go to it as soon as it answers again."""
    failures = 0
    while True:
        await asyncio.sleep(interval_s)
        if gallery.pending_writes() == 0:
            continue
        try:
            await asyncio.to_thread(gallery.push_pending)
            failures = 0
        except Exception:  # still down: tried again at the next interval
            failures += 1
            if failures == 1 or failures % 60 == 0:
                logger.warning(
                    "%d stored writes wait for the vector engine", gallery.pending_writes(), exc_info=True
                )


async def _purge_idempotency_keys(keys: IdempotencyKeys, interval_s: float) -> None:
    """Delete Idempotency-Key records past their time (they are ignored from then on anyway)."""
    while True:
        try:
            purged = await asyncio.to_thread(keys.purge_expired)
        except Exception:  # the store is down: the next pass purges them
            logger.warning("purging expired idempotency keys failed", exc_info=True)
        else:
            if purged:
                logger.info("purged %d expired idempotency keys", purged)
        await asyncio.sleep(interval_s)


def create_app(settings: Settings) -> FastAPI:
    metrics = Metrics()
    keyring = KeyRing.parse(settings.api_keys)  # a bad key ring fails here, before any model loads

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            services = await asyncio.to_thread(build_services, settings, metrics)
        except InvalidModelCard as exc:  # the one line an operator needs, before the traceback
            logger.error("refusing to start: %s", exc.detail)
            raise
        await services.engine.start()
        app.state.services = services
        interval = settings.index_reconcile_interval_s
        tasks = [
            asyncio.create_task(_push_pending_writes(services.gallery, settings.index_retry_interval_s)),
            asyncio.create_task(
                _purge_idempotency_keys(
                    services.idempotency, min(IDEMPOTENCY_PURGE_INTERVAL_S, settings.idempotency_key_ttl_s)
                )
            ),
        ]
        if interval > 0:
            tasks.append(asyncio.create_task(_reconcile_periodically(services.gallery, interval)))
        logger.info("ready on %s:%d", settings.host, settings.port)
        try:
            yield
        finally:
            app.state.services = None
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await services.engine.stop()
            await asyncio.to_thread(services.gallery.close)
            logger.info("stopped cleanly; index closed (FAISS snapshots saved)")

    app = FastAPI(
        title="Faces",
        version="0.1.0",
        summary="Self-hosted face recognition: enrollment, 1:N identification, 1:1 verification.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        dependencies=[Depends(require_json_content_type)],  # JSON bodies sent as JSON, or 415
    )
    app.state.settings = settings
    app.state.services = None
    install_problem_handlers(app)
    for module in (collections, subjects, faces, identify, verify, health):
        app.include_router(module.router)
    if settings.console_enabled:
        mount_console(app)
    _serve_docs(app)
    app.openapi = with_links(  # type: ignore[method-assign]
        problem_openapi(app), max_images=settings.max_images_per_request
    )
    upload_limit = settings.max_upload_bytes * settings.max_images_per_request + 1024 * 1024
    # Added innermost first: guard → metrics → Rekognition API (POST / with X-Amz-Target: its own
    # SigV4 auth, body cap and AWS-shaped errors) → /v1 auth (before any body) → body limits → routes.
    app.add_middleware(
        BodySizeLimit, max_multipart_bytes=upload_limit, max_other_bytes=settings.max_json_body_bytes
    )
    app.add_middleware(ApiKeyAuth, keyring=keyring, metrics_key=settings.metrics_key)
    app.add_middleware(
        RekognitionGateway,
        keyring=keyring,
        model=served_model(),
        handlers=HANDLERS,
        max_body_bytes=MAX_BODY_BYTES,
    )
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.add_middleware(InternalErrorGuard)
    return app


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI from the packaged swagger-ui-bundle files (Apache-2.0): /docs works offline."""
    app.mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon-32x32.png",
        )

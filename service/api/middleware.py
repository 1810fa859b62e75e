"""ASGI middleware: request body size limits, request-latency metrics, the last-resort 500."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import problem_body
from service.errors import PayloadTooLarge
from service.observability import Metrics

logger = logging.getLogger(__name__)


class BodySizeLimit:
    """Rejects bodies over the limit with 413, by Content-Length or while streaming.

    Multipart uploads get ``max_multipart_bytes`` (images); every other body (JSON) gets the small
    ``max_other_bytes``, so a metadata blob cannot use the upload allowance.
    """

    def __init__(self, app: ASGIApp, max_multipart_bytes: int, max_other_bytes: int) -> None:
        self.app = app
        self.max_multipart_bytes = max_multipart_bytes
        self.max_other_bytes = max_other_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        content_type = bytes(headers.get(b"content-type", b"")).split(b";", 1)[0].strip().lower()
        limit = self.max_multipart_bytes if content_type == b"multipart/form-data" else self.max_other_bytes
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _send_413(scope, send, limit)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # An HTTPException passes through FastAPI's body parsing untouched (→ 413 problem).
                    raise HTTPException(413, f"The request body exceeds {limit} bytes.")
            return message

        await self.app(scope, limited_receive, send)


async def send_problem(send: Send, problem: dict[str, Any], *, close: bool = False) -> None:
    """A problem+json response straight to the ASGI server (from middleware, before any route)."""
    body = json.dumps(problem).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if problem["status"] == 401:
        headers.append((b"www-authenticate", b"ApiKey"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": problem["status"], "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_413(scope: Scope, send: Send, max_bytes: int) -> None:
    detail = f"The request body exceeds {max_bytes} bytes."
    problem = problem_body(413, PayloadTooLarge.code, PayloadTooLarge.title, detail, scope.get("path", ""))
    await send_problem(send, problem)


class InternalErrorGuard:
    """The last resort: an unexpected exception becomes a 500 problem that says ``Connection: close``.

    Starlette's own handler re-raises after answering, and the server then drops the keep-alive
    connection without telling the client, whose next request on it fails. Here the exception is
    logged and swallowed, and the header lets the server close the connection cleanly and the
    client know it must open a new one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:  # too late for a 500: let the server abort the response
                raise
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            problem = problem_body(
                500,
                "internal_error",
                "Internal error",
                "The server failed to process the request.",
                scope.get("path", ""),
            )
            await send_problem(send, problem, close=True)


class RequestMetrics:
    """Latency histogram labelled by route template (not raw path: bounded cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.request_latency.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )

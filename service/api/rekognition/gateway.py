"""The Rekognition transport: ``POST /`` with ``X-Amz-Target: RekognitionService.<Operation>`` and a
JSON 1.1 body, answered in AWS's shapes, in the same process as ``/v1`` (same store, same index).

An ASGI middleware rather than a route, so that everything on this surface — authentication before
the body, the body cap, unknown operations, errors — is answered in AWS's JSON error shape, never
as problem+json or an HTML 404. Order of checks: operation name → access-key id, date and scope
of the signature (headers only) → body (capped) → signature over the body → JSON and the model's
input shape → the collection scope (it is in the body) → the operation.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

import service.api.rekognition.sigv4 as sigv4
from service.api.auth import KeyRing
from service.api.deps import Services
from service.api.rekognition.errors import (
    AccessDenied,
    AwsError,
    ImageTooLarge,
    InternalServerError,
    InvalidParameter,
    SerializationError,
    Throttling,
    UnknownOperation,
    from_service_error,
)
from service.api.rekognition.model import RekognitionModel
from service.errors import ServiceError

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-amz-json-1.1"
_TARGET_HEADER = b"x-amz-target"


@dataclass(frozen=True, slots=True)
class Context:
    """What an operation handler gets: the services and who is calling."""

    services: Services
    scope: frozenset[str] | None  # collections the caller's key may use (None: all)

    def allows(self, collection: str) -> bool:
        return self.scope is None or collection in self.scope

    def check(self, collection: str) -> None:
        if not self.allows(collection):
            raise AccessDenied(f"This access key may not use collection '{collection}'.")

    @property
    def model_version(self) -> str:
        return self.services.card.name


Handler = Callable[[Context, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class _RouteLabel:
    """Stands in for a route in ``scope["route"]``: RequestMetrics labels latency by ``path``."""

    path: str


class RekognitionGateway:
    """ASGI middleware: takes ``/`` requests that carry ``X-Amz-Target`` or the JSON 1.1 content
    type; everything else goes on to the FastAPI app untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        keyring: KeyRing,
        model: RekognitionModel,
        handlers: dict[str, Handler],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.keyring = keyring
        self.model = model
        self.handlers = handlers
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/" or not _is_aws(scope):
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        try:
            result = await self._handle(scope, receive)
        except AwsError as exc:
            await _send_error(send, exc, request_id)
            return
        except ServiceError as exc:
            await _send_error(send, from_service_error(exc), request_id)
            return
        except Exception:
            logger.exception("unhandled error in the Rekognition API")
            await _send_error(
                send, InternalServerError("The server failed to process the request."), request_id
            )
            return
        await _send_json(send, 200, result, request_id)

    async def _handle(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
        operation = self._operation(scope, headers)
        scope["route"] = _RouteLabel(f"rekognition:{operation}")
        claim: sigv4.SignedRequest | None = None
        secret = ""
        allowed: frozenset[str] | None = None
        if self.keyring.enabled:
            claim = sigv4.parse(headers)
            found = self.keyring.secret_for(claim.access_key_id)
            if found is None:
                raise sigv4.unknown_access_key()
            secret, allowed = found
        body = await self._read_body(receive, headers)
        if claim is not None:
            sigv4.verify(
                claim,
                secret,
                method=str(scope["method"]),
                raw_path=bytes(scope.get("raw_path") or b"/").decode("latin-1").split("?", 1)[0],
                query_string=bytes(scope.get("query_string") or b"").decode("latin-1"),
                headers=headers,
                body=body,
            )
        try:
            document = json.loads(body) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise SerializationError("The request body is not valid JSON.") from exc
        params = self.model.validate(operation, document)
        services: Services | None = getattr(scope["app"].state, "services", None)
        if services is None:
            raise Throttling("The service is starting; retry shortly.")
        context = Context(services, allowed)
        collection = params.get("CollectionId")
        if isinstance(collection, str):
            context.check(collection)
        return await self.handlers[operation](context, params)

    def _operation(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> str:
        target = next((v.decode("latin-1") for k, v in headers if k.lower() == _TARGET_HEADER), None)
        if scope["method"] != "POST":
            raise UnknownOperation(f"The Rekognition API takes POST requests, not {scope['method']}.")
        if not target:
            raise UnknownOperation("Missing X-Amz-Target: RekognitionService.<Operation>.")
        prefix, dot, name = target.partition(".")
        if prefix != self.model.target_prefix or not dot:
            raise UnknownOperation(
                f"Unknown target {target!r}; expected {self.model.target_prefix}.<Operation>."
            )
        if name not in self.model.operations:
            raise UnknownOperation(f"{name!r} is not an operation of Amazon Rekognition.")
        if name not in self.handlers:
            raise InvalidParameter(
                f"Operation {name} is not supported by this server (it serves the face collection, "
                f"search, compare, detect and user operations)."
            )
        return name

    async def _read_body(self, receive: Receive, headers: list[tuple[bytes, bytes]]) -> bytes:
        length = next((v for k, v in headers if k.lower() == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            raise ImageTooLarge(f"The request body exceeds {self.max_body_bytes} bytes.")
        chunks: list[bytes] = []
        seen = 0
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                raise InvalidParameter("The client disconnected before sending the whole body.")
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body_bytes:
                raise ImageTooLarge(f"The request body exceeds {self.max_body_bytes} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _is_aws(scope: Scope) -> bool:
    for key, value in scope.get("headers") or []:
        name = key.lower()
        if name == _TARGET_HEADER:
            return True
        if name == b"content-type" and value.split(b";", 1)[0].strip().lower() == CONTENT_TYPE.encode():
            return True
    return False


async def _send_json(
    send: Send, status: int, document: dict[str, Any], request_id: str, *, error_type: str | None = None
) -> None:
    body = json.dumps(document, separators=(",", ":")).encode()
    headers = [
        (b"content-type", CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-amzn-requestid", request_id.encode()),
    ]
    if error_type is not None:
        headers.append((b"x-amzn-errortype", error_type.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, error: AwsError, request_id: str) -> None:
    await _send_json(
        send,
        error.status,
        {"__type": error.code, "message": error.message},
        request_id,
        error_type=error.code,
    )

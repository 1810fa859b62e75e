"""API keys, checked on the raw request before the app reads a byte of its body.

An unauthenticated 100 MiB upload costs the server a header lookup and a 401, not a spooled file:
``ApiKeyAuth`` answers 401/403 from the headers and the path alone. The per-route dependencies
(service/api/deps.py) see the same ``Caller`` and keep doing the checks that need the body
(creating a collection with a scoped key) or the results (filtering the collection list).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.middleware import send_problem
from service.api.problems import problem_body
from service.errors import Forbidden, ServiceError, Unauthorized
from service.settings import parse_key_ring

API_KEY_HEADER = "X-API-Key"
CALLER_SCOPE_KEY = "faces.caller"
_COLLECTIONS_PREFIX = "/v1/collections/"


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Configured API keys; a key maps to its allowed collections (None = all), and an access-key id
    (AWS Signature V4, the Rekognition-compatible API) to its key."""

    keys: dict[str, frozenset[str] | None] = field(default_factory=dict)
    access_keys: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, entries: list[str]) -> KeyRing:
        """ValueError with the offending entry for an empty key or scope, or a duplicate key or id."""
        keys, ids = parse_key_ring(entries)
        return cls(keys, ids)

    def secret_for(self, access_key_id: str) -> tuple[str, frozenset[str] | None] | None:
        """The key (secret) and scope behind an access-key id; None for an unknown id. Every id is
        compared, so timing says nothing about which ids exist."""
        found: str | None = None
        for known, secret in self.access_keys.items():
            if hmac.compare_digest(known.encode(), access_key_id.encode()):
                found = secret
        if found is None:
            return None
        return found, self.keys[found]

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def scope_of(self, presented: str | None) -> frozenset[str] | None:
        """The collections the key may use (None: all); Unauthorized for a missing/unknown key."""
        if not presented:
            raise Unauthorized(f"This server requires an API key in the {API_KEY_HEADER} header.")
        matched = False
        allowed: frozenset[str] | None = None
        for key, scope in self.keys.items():  # every key compared: timing says nothing about which
            if hmac.compare_digest(key.encode(), presented.encode()):
                matched, allowed = True, scope
        if not matched:
            raise Unauthorized("The API key is not valid.")
        return allowed


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the collections their key may touch (None: all), and ``principal``, a
    fingerprint of their key ("" when keys are off) that scopes their Idempotency-Keys."""

    scope: frozenset[str] | None
    principal: str = ""

    def allows(self, collection: str) -> bool:
        return self.scope is None or collection in self.scope

    def check(self, collection: str) -> None:
        if not self.allows(collection):
            raise Forbidden(f"This API key may not use collection '{collection}'.")


def collection_in_path(path: str) -> str | None:
    """``/v1/collections/{collection}/...`` → the collection, as the router will see it."""
    if not path.startswith(_COLLECTIONS_PREFIX):
        return None
    return path[len(_COLLECTIONS_PREFIX) :].split("/", 1)[0]


class ApiKeyAuth:
    """ASGI middleware: 401/403 from headers and path, before the body is received.

    ``/v1/...`` needs a key when keys are configured, and a collection-scoped key only reaches its
    own collections' paths. ``/metrics`` lists every collection: with auth on it needs an
    all-collections key or the metrics key; the metrics key opens nothing else. Probes, the
    OpenAPI document and ``/docs`` stay open.
    """

    def __init__(self, app: ASGIApp, keyring: KeyRing, metrics_key: str = "") -> None:
        self.app = app
        self.keyring = keyring
        self.metrics_key = metrics_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            caller = self._authorize(scope)
        except ServiceError as exc:
            path = scope.get("path", "")
            await send_problem(send, problem_body(exc.status, exc.code, exc.title, exc.detail, path))
            return
        if caller is not None:
            scope[CALLER_SCOPE_KEY] = caller
        await self.app(scope, receive, send)

    def _authorize(self, scope: Scope) -> Caller | None:
        path: str = scope["path"]
        if path == "/metrics":
            self._authorize_metrics(_header(scope, b"x-api-key"))
            return None
        if not (path == "/v1" or path.startswith("/v1/")):
            return None
        if not self.keyring.enabled:
            return Caller(None)
        presented = _header(scope, b"x-api-key")
        caller = Caller(self.keyring.scope_of(presented), principal=key_fingerprint(presented or ""))
        collection = collection_in_path(path)
        if collection is not None:
            caller.check(collection)
        return caller

    def _authorize_metrics(self, presented: str | None) -> None:
        if not self.keyring.enabled and not self.metrics_key:
            return
        if (
            self.metrics_key
            and presented
            and hmac.compare_digest(self.metrics_key.encode(), presented.encode())
        ):
            return
        if not self.keyring.enabled:
            raise Unauthorized("The metrics key is missing or not valid.")
        if self.keyring.scope_of(presented) is not None:
            raise Forbidden("Metrics name every collection: they need a key for all collections.")


def key_fingerprint(key: str) -> str:
    """A short one-way digest of an API key: names the caller in stored records, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or []:
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None

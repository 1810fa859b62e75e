"""Dependencies: the long-lived objects built in the lifespan, and API-key checks."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader

from service.domain.calibration import CalibrationSlot
from service.domain.faces import FaceEngine
from service.domain.gallery import Gallery
from service.domain.thresholds import ThresholdPolicy
from service.errors import Forbidden, NotReady, Unauthorized
from service.observability import Metrics
from service.runtime.model_card import ModelCard
from service.settings import Settings


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Configured API keys; a key maps to its allowed collections (None = all)."""

    keys: dict[str, frozenset[str] | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, entries: list[str]) -> KeyRing:
        keys: dict[str, frozenset[str] | None] = {}
        for entry in entries:
            key, _, scope = entry.partition(":")
            collections = frozenset(c.strip() for c in scope.split(",") if c.strip())
            keys[key.strip()] = collections or None
        return cls(keys)

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def scope_of(self, presented: str | None) -> frozenset[str] | None:
        """The collections the key may use (None: all); Unauthorized for a missing/unknown key."""
        if not presented:
            raise Unauthorized("This server requires an API key in the X-API-Key header.")
        for key, scope in self.keys.items():
            if hmac.compare_digest(key.encode(), presented.encode()):
                return scope
        raise Unauthorized("The API key is not valid.")


@dataclass(slots=True)
class Services:
    settings: Settings
    gallery: Gallery
    engine: FaceEngine
    card: ModelCard
    metrics: Metrics
    keyring: KeyRing
    provider: str
    thresholds: ThresholdPolicy
    calibration: CalibrationSlot


def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReady("The service is starting.")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Needed when keys are configured"
)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the collections their key may touch (None: all)."""

    scope: frozenset[str] | None

    def allows(self, collection: str) -> bool:
        return self.scope is None or collection in self.scope

    def check(self, collection: str) -> None:
        if not self.allows(collection):
            raise Forbidden(f"This API key may not use collection '{collection}'.")


def get_caller(services: ServicesDep, api_key: Annotated[str | None, Depends(_api_key_header)]) -> Caller:
    if not services.keyring.enabled:
        return Caller(None)
    return Caller(services.keyring.scope_of(api_key))


CallerDep = Annotated[Caller, Depends(get_caller)]


def collection_access(collection: str, caller: CallerDep) -> str:
    """Path parameter ``collection`` after the caller's key has been checked against it."""
    caller.check(collection)
    return collection


CollectionDep = Annotated[str, Depends(collection_access)]

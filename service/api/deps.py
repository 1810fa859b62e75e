"""Dependencies: the long-lived objects built in the lifespan (``Services``), and API-key checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyHeader

from service.api.auth import API_KEY_HEADER, CALLER_SCOPE_KEY, Caller
from service.api.schemas import CollectionName
from service.domain.services import Services
from service.errors import NotReady, Unauthorized

# ``Services`` is named here too: routes take it from their dependencies module.
__all__ = [
    "CallerDep",
    "CollectionDep",
    "Services",
    "ServicesDep",
    "collection_access",
    "get_caller",
    "get_services",
]


def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise NotReady("The service is starting.")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]

_api_key_header = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="Needed when keys are configured"
)


def get_caller(request: Request, api_key: Annotated[str | None, Depends(_api_key_header)]) -> Caller:
    """The caller ApiKeyAuth identified from the headers before the body was read (every ``/v1``
    request passes through it). ``api_key`` is declared here only so the OpenAPI document shows it."""
    del api_key
    caller = request.scope.get(CALLER_SCOPE_KEY)
    if not isinstance(caller, Caller):  # fail closed, should the middleware ever be left out
        raise Unauthorized("This request was not authenticated.")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def collection_access(
    collection: Annotated[CollectionName, Path(description="Collection name")], caller: CallerDep
) -> str:
    """Path parameter ``collection`` after the caller's key has been checked against it."""
    caller.check(collection)
    return collection


CollectionDep = Annotated[str, Depends(collection_access)]

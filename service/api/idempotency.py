"""The ``Idempotency-Key`` request header at the edge: parsed, fingerprinted, claimed or replayed.

The policy is service/domain/idempotency.py; this module turns a request into its fingerprint
(method, path, query, caller and a digest of the body) and a replayed answer into a response.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import Header, Request
from fastapi.responses import JSONResponse

from service.api.auth import Caller
from service.api.problems import PROBLEM_MEDIA_TYPE
from service.domain.idempotency import (
    Answer,
    IdempotencyKeys,
    IdempotentWrite,
    parse_key,
    request_fingerprint,
)

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias=IDEMPOTENCY_KEY_HEADER,
        description=(
            "Makes the request safe to retry (IETF draft 'The Idempotency-Key HTTP Header Field'): a unique "
            'string per request, e.g. a UUID, as a Structured Field string ("...") or a bare token, 1-255 '
            "printable ASCII characters. A retry with the same key and the same request gets the first "
            "answer again (header Idempotent-Replayed: true) and stores nothing; the same key with "
            "another request: 422 idempotency_key_reused; while the first is still running: 409 "
            "idempotency_key_in_flight with Retry-After; malformed: 400 idempotency_key_invalid. Keys "
            "are kept FACES_IDEMPOTENCY_KEY_TTL_S (24 h by default) per API key."
        ),
    ),
]


def begin(
    keys: IdempotencyKeys, request: Request, caller: Caller, raw_key: str | None, body_digest: str
) -> IdempotentWrite | JSONResponse | None:
    """None without a key; the replayed first answer for a retry; else this attempt's claim.

    Blocking (store round trips): sync routes call it as is, async ones in a thread.
    """
    if raw_key is None:
        return None
    key = parse_key(raw_key)
    fingerprint = request_fingerprint(
        request.method, request.url.path, request.query_params.multi_items(), caller.principal, body_digest
    )
    claimed = keys.begin(caller.principal, key, fingerprint)
    if isinstance(claimed, Answer):
        return replay(claimed)
    return IdempotentWrite(keys, claimed)


def replay(answer: Answer) -> JSONResponse:
    media_type = PROBLEM_MEDIA_TYPE if answer.status >= 400 else "application/json"
    return JSONResponse(
        answer.body, status_code=answer.status, media_type=media_type, headers={REPLAYED_HEADER: "true"}
    )


@contextmanager
def released_on_failure(write: IdempotentWrite | None) -> Iterator[None]:
    """An attempt that raises releases its key (what it wrote, if anything, keeps its record)."""
    try:
        yield
    except BaseException:
        if write is not None:
            try:
                write.release()
            except Exception:  # the store is down: the key frees itself after the in-flight timeout
                logger.warning("could not release an idempotency key", exc_info=True)
        raise

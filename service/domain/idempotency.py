"""Idempotent writes: the ``Idempotency-Key`` request header (IETF httpapi draft
"The Idempotency-Key HTTP Header Field").

A client sends a unique key with a POST it may retry. The first request with a key claims it (a row
in the store, so every replica and every restart sees it); its answer is recorded in the very
transaction of the write it answers for. A retry with the same key and the same request (method,
path, query, caller and body fingerprint) gets that first answer again, without a second write; the
same key with another request is refused (422 ``idempotency_key_reused``); a retry that arrives while
the first attempt is still running gets 409 ``idempotency_key_in_flight`` with ``Retry-After``.
A request that fails before writing anything (a 4xx, a crash) releases its key: the retry runs anew.
An attempt that died without releasing (the process was killed) holds the key for
``in_flight_timeout_s`` at most (``FACES_IDEMPOTENCY_IN_FLIGHT_TIMEOUT_S``, 120 s); one that is merely
slower than that loses its key and is rolled back (409), never written twice. Records expire after
``ttl_s`` (``FACES_IDEMPOTENCY_KEY_TTL_S``, 24 h by default) and are purged periodically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from service.errors import IdempotencyKeyInFlight, IdempotencyKeyInvalid, IdempotencyKeyReused
from service.storage.engine import InTransaction
from service.storage.idempotency import DONE, ClaimLost, IdempotencyRepository

logger = logging.getLogger(__name__)

MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class Answer:
    """What a write answered: replayed verbatim to a retry with the same key."""

    status: int
    body: Any  # JSON-ready


@dataclass(frozen=True, slots=True)
class Claim:
    """One attempt's hold on a key."""

    caller: str
    key: str
    fingerprint: str
    token: str


def parse_key(raw: str) -> str:
    """The key from the header value: a Structured Field string (``"abc"``, as the draft says) or,
    leniently, a bare token (``abc``); 1 to 255 printable ASCII characters.

    IdempotencyKeyInvalid (400) otherwise: a key the server cannot compare exactly is no key.
    """
    value = raw.strip(" \t")
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner, key, escaped = value[1:-1], [], False
        for char in inner:
            if escaped:
                if char not in '"\\':
                    raise IdempotencyKeyInvalid('Idempotency-Key: only \\" and \\\\ may be escaped.')
                key.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                raise IdempotencyKeyInvalid('Idempotency-Key: an unescaped " inside the string.')
            else:
                key.append(char)
        if escaped:
            raise IdempotencyKeyInvalid("Idempotency-Key: the string ends inside an escape.")
        text = "".join(key)
    else:
        text = value
        if any(c in text for c in ' "\\,;'):
            raise IdempotencyKeyInvalid(
                'Idempotency-Key must be one string ("..."), or one token without spaces, quotes, commas '
                "or semicolons."
            )
    if not text or len(text) > MAX_KEY_LENGTH:
        raise IdempotencyKeyInvalid(f"Idempotency-Key must have 1 to {MAX_KEY_LENGTH} characters.")
    if any(not (0x20 <= ord(c) <= 0x7E) for c in text):
        raise IdempotencyKeyInvalid("Idempotency-Key may only hold printable ASCII characters.")
    return text


def request_fingerprint(
    method: str, path: str, query: Sequence[tuple[str, str]], caller: str, body_digest: str
) -> str:
    """sha256 of what makes two requests "the same": a retry must match all of it."""
    material = json.dumps(
        [method.upper(), path, sorted(query), caller, body_digest], separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(material.encode()).hexdigest()


def json_digest(value: Any) -> str:
    """Fingerprint of a JSON body as parsed (key order and spacing do not matter)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def parts_digest(parts: Sequence[tuple[str, str, bytes]]) -> str:
    """Fingerprint of a multipart body: (field name, filename or value, content) of each part, in
    order. Not the raw bytes: every client picks a fresh boundary for each attempt."""
    outer = hashlib.sha256()
    for name, label, content in parts:
        for piece in (
            name.encode(),
            label.encode("utf-8", "surrogatepass"),
            hashlib.sha256(content).digest(),
        ):
            outer.update(len(piece).to_bytes(8, "big"))
            outer.update(piece)
    return outer.hexdigest()


class IdempotencyKeys:
    """The policy over the store's key records (built once at start-up, shared by the routes)."""

    def __init__(
        self,
        repository: IdempotencyRepository,
        *,
        ttl_s: float,
        in_flight_timeout_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._repository = repository
        self._ttl_ms = int(ttl_s * 1000)
        self._lease_ms = int(in_flight_timeout_s * 1000)
        self._clock = clock

    @property
    def ttl_s(self) -> float:
        return self._ttl_ms / 1000

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def begin(self, caller: str, key: str, fingerprint: str) -> Claim | Answer:
        """Claim the key for this attempt, or the recorded answer of the first one.

        IdempotencyKeyReused (422): the key was used for another request. IdempotencyKeyInFlight
        (409): an attempt with the key is still running.
        """
        for _ in range(8):  # each turn loses only to an attempt that changed the row meanwhile
            token = secrets.token_hex(16)
            now = self._now_ms()
            if self._repository.insert(caller, key, fingerprint, token, now, self._lease_ms, self._ttl_ms):
                return Claim(caller, key, fingerprint, token)
            found = self._repository.read(caller, key)
            if found is None:
                continue  # purged or released in between: claim again
            expired = found.expires_ms <= now
            if not expired and found.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used for a different request (method, path, "
                    "query, API key or body); use a new key for a new request.",
                )
            if not expired and found.state == DONE:
                assert found.status is not None
                return Answer(found.status, found.body)
            if not expired and found.lease_until_ms > now:
                raise IdempotencyKeyInFlight(
                    "A request with this Idempotency-Key is still being processed; retry when it has "
                    "answered.",
                    retry_after=1,
                )
            # An expired record, or an attempt that died holding the key (nothing of it was stored:
            # its answer would have been recorded with its write): take the key over.
            if self._repository.take_over(
                caller, key, found.token, fingerprint, token, now, self._lease_ms, self._ttl_ms
            ):
                if not expired:
                    logger.warning("idempotency key taken over from an attempt that did not finish")
                return Claim(caller, key, fingerprint, token)
        raise IdempotencyKeyInFlight(
            "Requests with this Idempotency-Key are racing; retry in a moment.", retry_after=1
        )

    def in_transaction(self, claim: Claim, render: Callable[[Any], Answer]) -> InTransaction:
        """A hook for a store write: records ``render(what was written)`` in the write's transaction.

        When the key was taken over meanwhile, the write is rolled back and 409 answered."""

        def complete(conn: Connection, written: Any) -> None:
            answer = render(written)
            try:
                self._repository.complete_in(
                    conn, claim.caller, claim.key, claim.token, answer.status, answer.body
                )
            except ClaimLost as exc:
                raise IdempotencyKeyInFlight(
                    "This attempt ran past the in-flight timeout and another one took its "
                    "Idempotency-Key over; nothing was stored by this one.",
                    retry_after=1,
                ) from exc

        return complete

    def correct(self, claim: Claim, answer: Answer) -> None:
        """Replace the recorded answer (after the write, before it is sent)."""
        self._repository.complete(claim.caller, claim.key, claim.token, answer.status, answer.body)

    def release(self, claim: Claim) -> None:
        """The attempt stored nothing (it failed): forget it, a retry runs anew."""
        self._repository.release(claim.caller, claim.key, claim.token)

    def purge_expired(self) -> int:
        return self._repository.purge(self._now_ms())


class IdempotentWrite:
    """One request's hold on its key, handed to the write: records the answer in its transaction."""

    def __init__(self, keys: IdempotencyKeys, claim: Claim) -> None:
        self._keys = keys
        self.claim = claim

    def within(self, render: Callable[[Any], Answer]) -> InTransaction:
        """The hook for the store write: ``render(what was written)`` is recorded with it."""
        return self._keys.in_transaction(self.claim, render)

    def correct(self, answer: Answer) -> None:
        """The answer changed after the write (the engine did not take it): record the new one."""
        self._keys.correct(self.claim, answer)

    def release(self) -> None:
        """Nothing was written (an error, or every image rejected): a retry runs anew."""
        self._keys.release(self.claim)

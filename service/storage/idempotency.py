"""Idempotency-Key records in the store: shared by every replica, kept across restarts.

Every operation is one small transaction with a condition on the attempt's ``token``, so two
replicas racing for the same key never both win; ``complete_in`` runs inside the transaction of the
write it answers for (``FaceStore``'s ``within`` hooks). The policy (what a second request with the
same key gets) lives in service/domain/idempotency.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from service.storage.schema import idempotency_keys_table as keys

IN_FLIGHT, DONE = "in_flight", "done"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One stored key: whose request (``fingerprint``), which attempt holds it, and its answer."""

    fingerprint: str
    token: str
    state: str
    status: int | None
    body: Any
    lease_until_ms: int
    expires_ms: int


class ClaimLost(Exception):
    """The attempt no longer holds the key (its lease ran out and another attempt took it)."""


class IdempotencyRepository:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(
        self, caller: str, key: str, fingerprint: str, token: str, now_ms: int, lease_ms: int, ttl_ms: int
    ) -> bool:
        """Claim a key nobody holds; False when a row for it exists (whatever its state)."""
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(keys).values(
                        caller=caller,
                        idem_key=key,
                        **_fresh_claim(fingerprint, token, now_ms, lease_ms, ttl_ms),
                    )
                )
        except IntegrityError:
            return False
        return True

    def read(self, caller: str, key: str) -> KeyRecord | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(keys).where(keys.c.caller == caller, keys.c.idem_key == key)).first()
        if row is None:
            return None
        return KeyRecord(
            fingerprint=str(row.fingerprint),
            token=str(row.token),
            state=str(row.state),
            status=int(row.status) if row.status is not None else None,
            body=row.body,
            lease_until_ms=int(row.lease_until_ms),
            expires_ms=int(row.expires_ms),
        )

    def take_over(
        self,
        caller: str,
        key: str,
        old_token: str,
        fingerprint: str,
        token: str,
        now_ms: int,
        lease_ms: int,
        ttl_ms: int,
    ) -> bool:
        """Replace an expired record or a dead attempt's claim; False when another attempt won."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(keys)
                .where(keys.c.caller == caller, keys.c.idem_key == key, keys.c.token == old_token)
                .values(**_fresh_claim(fingerprint, token, now_ms, lease_ms, ttl_ms))
            )
            return bool(result.rowcount == 1)

    def complete_in(
        self, conn: Connection, caller: str, key: str, token: str, status: int, body: Any
    ) -> None:
        """Record the answer inside the caller's transaction; ClaimLost rolls that transaction back."""
        result = conn.execute(
            update(keys)
            .where(keys.c.caller == caller, keys.c.idem_key == key, keys.c.token == token)
            .values(state=DONE, status=status, body=body)
        )
        if result.rowcount != 1:
            raise ClaimLost(key)

    def complete(self, caller: str, key: str, token: str, status: int, body: Any) -> None:
        """Record (or correct) the answer of an attempt in a transaction of its own."""
        with self._engine.begin() as conn:
            self.complete_in(conn, caller, key, token, status, body)

    def release(self, caller: str, key: str, token: str) -> None:
        """Forget an attempt that wrote nothing (it failed): a retry runs the request afresh."""
        with self._engine.begin() as conn:
            conn.execute(
                delete(keys).where(
                    keys.c.caller == caller,
                    keys.c.idem_key == key,
                    keys.c.token == token,
                    keys.c.state == IN_FLIGHT,
                )
            )

    def purge(self, now_ms: int) -> int:
        """Delete every expired record; returns how many."""
        with self._engine.begin() as conn:
            result = conn.execute(delete(keys).where(keys.c.expires_ms <= now_ms))
            return int(result.rowcount or 0)


def _fresh_claim(fingerprint: str, token: str, now_ms: int, lease_ms: int, ttl_ms: int) -> dict[str, object]:
    """The columns of a claim just made: in flight, no answer yet, leased and expiring from now."""
    return {
        "fingerprint": fingerprint,
        "token": token,
        "state": IN_FLIGHT,
        "status": None,
        "body": None,
        "created_ms": now_ms,
        "lease_until_ms": now_ms + lease_ms,
        "expires_ms": now_ms + ttl_ms,
    }

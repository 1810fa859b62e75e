"""Writes stored while the vector engine was down: counted per collection, pushed when it answers.

The store is the source of truth: a write the engine does not take is still acknowledged, as stored
but not yet searchable, and counted here (``pending_writes`` on /readyz) until a push (a reconcile of
the collections concerned) gets it into the engine.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from service.errors import VectorEngineUnavailable
from service.index.base import ReconcileReport, VectorIndex

logger = logging.getLogger(__name__)


class PendingWrites:
    """Writes this process stored but the vector engine did not take, per collection pk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}

    def add(self, collection_pk: int, writes: int) -> None:
        with self._lock:
            self._counts[collection_pk] = self._counts.get(collection_pk, 0) + max(1, writes)

    def snapshot(self) -> dict[int, int]:
        with self._lock:
            return dict(self._counts)

    def settle(self, pushed: dict[int, int]) -> None:
        """Forget what a successful push covered (writes that failed during it stay)."""
        with self._lock:
            for pk, n in pushed.items():
                left = self._counts.get(pk, 0) - n
                if left > 0:
                    self._counts[pk] = left
                else:
                    self._counts.pop(pk, None)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def apply(self, collection_pk: int, writes: int, what: str, change: Callable[[], object]) -> bool:
        """Apply a stored change to the engine; False (and counted as pending) when it is down."""
        try:
            change()
        except VectorEngineUnavailable as exc:
            self.add(collection_pk, writes)
            logger.warning(
                "collection %d: %s stored; the vector engine did not take it (%s): pending, pushed "
                "when the engine answers again",
                collection_pk,
                what,
                exc.detail,
            )
            return False
        return True

    def push(
        self, indexes: VectorIndex, collection_pks: Callable[[], Sequence[int]]
    ) -> ReconcileReport | None:
        """Push pending writes to the engine now (None: nothing pending). Raises
        VectorEngineUnavailable while the engine is still down; the caller tries again later."""
        pushed = self.snapshot()
        if not pushed:
            return None
        pks = list(collection_pks())
        live = set(pks)
        report = indexes.reconcile(pks, suspects=[pk for pk in pushed if pk in live])
        self.settle(pushed)
        logger.warning(
            "vector engine back: %d pending writes pushed (%d vectors inserted, %d deleted)",
            sum(pushed.values()),
            report.inserted,
            report.deleted,
        )
        return report

"""Per-collection query coalescing: searches that overlap a running scan are answered together.

No timer: a call that finds the collection idle scans at once (the lone fast path); calls that
arrive meanwhile queue, and when the scan ends one of them takes the whole queue as one block.
Nothing process-wide is switched, so concurrent collections do not race.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from service.index.base import SearchHits

# Scans the given queries for the k best each; the coalescer splits its answer among the callers.
Scan = Callable[[NDArray[np.float32], int], SearchHits]


@dataclass(slots=True)
class Waiting:
    """One search call parked in a collection's queue until a scan answers it."""

    queries: NDArray[np.float32]
    k: int
    hits: SearchHits | None = None
    error: BaseException | None = None
    done: bool = False


@dataclass(slots=True)
class QueryCoalescer:
    """Identify calls that arrive while a scan runs wait, then are answered by one pass together."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    pending: list[Waiting] = field(default_factory=list)
    busy: bool = False
    blocks: int = 0  # scans that answered several calls (for tests and the benchmark)
    coalesced: int = 0  # calls answered by such scans

    def search(self, queries: NDArray[np.float32], k: int, scan: Scan) -> SearchHits:
        """The top-k hits of ``queries``: scanned now when idle, else with the calls queued meanwhile."""
        me = Waiting(queries, k)
        with self.cond:
            self.pending.append(me)
            while self.busy and not me.done:
                self.cond.wait()
            if not me.done:  # idle: this call scans, for itself and whoever queued meanwhile
                self.busy = True
                batch, self.pending = self.pending, []
        if not me.done:
            try:
                answer(batch, scan)
            finally:
                with self.cond:
                    self.busy = False
                    if len(batch) > 1:
                        self.blocks += 1
                        self.coalesced += len(batch)
                    self.cond.notify_all()
        if me.error is not None:
            raise me.error
        assert me.hits is not None
        return me.hits


def answer(batch: list[Waiting], scan: Scan) -> None:
    """One scan for every call in ``batch``, each given its own rows and k of the answer."""
    try:
        queries = batch[0].queries if len(batch) == 1 else np.concatenate([w.queries for w in batch])
        sims, ids = scan(queries, max(w.k for w in batch))
        start = 0
        for waiting in batch:
            stop = start + len(waiting.queries)
            k = min(waiting.k, sims.shape[1])
            waiting.hits = (
                np.ascontiguousarray(sims[start:stop, :k], dtype=np.float32),
                np.ascontiguousarray(ids[start:stop, :k], dtype=np.int64),
            )
            start = stop
    except BaseException as exc:  # every caller of the block sees the failure, not a hang
        for waiting in batch:
            waiting.error = exc
    finally:
        for waiting in batch:
            waiting.done = True

"""Bench-only server variants: ``faces serve`` with one proposed optimisation patched in.

This lets a proposal for code the bench does not own be measured by the same harness and land in
the same table as the unpatched service (before/after). Nothing here is imported by ``service/``.

    python -m bench.experiments no-count-lookup serve --host 127.0.0.1 --port 8000
    python -m bench.experiments no-count-lookup+faiss-1-thread serve
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from service.storage.records import CollectionRecord
from service.storage.store import FaceStore, _aware


def collection_without_counts(store: FaceStore, name: str) -> CollectionRecord:
    """The collection row alone: one indexed lookup, no ``COUNT(*)`` (counts left at 0)."""
    with store._engine.connect() as conn:
        row = store._collection_row(conn, name)
    return CollectionRecord(
        pk=int(row.pk),
        name=str(row.name),
        description=str(row.description or ""),
        created_at=_aware(row.created_at),
        revision=int(row.revision),
    )


def no_count_lookup() -> None:
    """Resolve a collection by name without counting its subjects and faces.

    Every identify request looks its collection up twice (``domain.search.identify`` and
    ``Gallery.search``) and each lookup runs two ``COUNT(*)`` scans, linear in the gallery size.
    The patched lookup returns the row alone; the identify path never reads the counts.
    """
    FaceStore.get_collection = collection_without_counts  # type: ignore[method-assign, assignment]


def faiss_single_thread() -> None:
    """One OpenMP thread for FAISS: a batch-1 flat scan does not need more, and on a busy box
    (ONNX Runtime's pool, the analysis threads, other processes) OpenMP's barrier between two
    threads costs far more than the scan itself."""
    import faiss

    faiss.omp_set_num_threads(1)


def onnx_single_thread() -> None:
    """``FACES_INTRA_OP_THREADS=1`` (a setting, no code change): requests already run concurrently
    (analysis threads, batcher), so each ONNX Runtime call need not fan out across the cores."""
    os.environ["FACES_INTRA_OP_THREADS"] = "1"


EXPERIMENTS: dict[str, Callable[[], None]] = {
    "no-count-lookup": no_count_lookup,
    "faiss-1-thread": faiss_single_thread,
    "ort-1-thread": onnx_single_thread,
}


def apply(spec: str) -> None:
    """Apply ``name`` or ``name+name`` patches."""
    for name in spec.split("+"):
        EXPERIMENTS[name]()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or any(name not in EXPERIMENTS for name in args[0].split("+")):
        print(f"usage: python -m bench.experiments {{{','.join(EXPERIMENTS)}}}[+...] serve [options]")
        return 2
    apply(args[0])
    from service.cli import main as cli_main

    return cli_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())

"""Bench-only server variants: ``faces serve`` with a change undone (before) or proposed, patched in.

This lets a change to code the bench does not own be measured by the same harness and land in the
same table as the unpatched service (before/after). Nothing here is imported by ``service/``.

    python -m bench.experiments prelu-kept serve --host 127.0.0.1 --port 8000
    python -m bench.experiments counting-lookup+faiss-all-threads serve
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from service.storage.collections import CollectionRepository
from service.storage.records import CollectionLookup


def counting_lookup() -> None:
    """The identify/enroll path as it was before ``store.collections.collection_pk`` / ``collection_lookup``
    (identify's one-row read of key and threshold): the collection resolved
    through ``get_collection``, which runs ``COUNT(*)`` over its subjects and faces (linear in the
    gallery). Kept so the fix's before/after stays measurable in one table."""

    def collection_pk(self: CollectionRepository, name: str) -> int:
        return self.get_collection(name).pk

    def collection_lookup(self: CollectionRepository, name: str) -> CollectionLookup:
        record = self.get_collection(name)
        return CollectionLookup(record.pk, record.own_threshold, record.subject_count, record.face_count)

    CollectionRepository.collection_pk = collection_pk  # type: ignore[method-assign]
    CollectionRepository.collection_lookup = collection_lookup  # type: ignore[method-assign]


def faiss_all_threads() -> None:
    """FAISS searches on every core, as before ``search_threads=1`` became the default: a batch-1
    flat scan does not need more than one, and on a busy box (ONNX Runtime's pool, the analysis
    threads) OpenMP's barrier between threads costs more than the scan itself."""
    os.environ["FACES_SEARCH_THREADS"] = str(os.cpu_count() or 1)


def prelu_kept() -> None:
    """The ONNX graphs run as shipped (``FACES_CPU_GRAPH_REWRITES=false``): SFace's PRelu nodes on
    ONNX Runtime's generic CPU kernel, as before ``service.runtime.graph_rewrite``."""
    os.environ["FACES_CPU_GRAPH_REWRITES"] = "false"


def onnx_single_thread() -> None:
    """``FACES_INTRA_OP_THREADS=1`` (a setting, no code change): requests already run concurrently
    (analysis threads, batcher), so each ONNX Runtime call need not fan out across the cores."""
    os.environ["FACES_INTRA_OP_THREADS"] = "1"


EXPERIMENTS: dict[str, Callable[[], None]] = {
    "counting-lookup": counting_lookup,
    "faiss-all-threads": faiss_all_threads,
    "prelu-kept": prelu_kept,
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

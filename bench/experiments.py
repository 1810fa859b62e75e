"""Bench-only server variants: ``faces serve`` with one proposed optimisation patched in.

This lets a proposal for code the bench does not own be measured by the same harness and land in
the same table as the unpatched service (before/after). Nothing here is imported by ``service/``.

    python -m bench.experiments no-count-lookup serve --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from service.storage.records import CollectionRecord
from service.storage.store import FaceStore, _aware


def no_count_lookup() -> None:
    """Resolve a collection by name without counting its subjects and faces.

    Every identify request looks its collection up twice (``domain.search.identify`` and
    ``Gallery.search``) and each lookup runs two ``COUNT(*)`` scans, linear in the gallery size.
    The patched lookup returns the row alone (counts 0); the identify path never reads the counts.
    """

    def get_collection(self: FaceStore, name: str) -> CollectionRecord:
        with self._engine.connect() as conn:
            row = self._collection_row(conn, name)
        return CollectionRecord(
            pk=int(row.pk),
            name=str(row.name),
            description=str(row.description or ""),
            created_at=_aware(row.created_at),
            revision=int(row.revision),
        )

    FaceStore.get_collection = get_collection  # type: ignore[method-assign]


EXPERIMENTS: dict[str, Callable[[], None]] = {"no-count-lookup": no_count_lookup}


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in EXPERIMENTS:
        print(f"usage: python -m bench.experiments {{{','.join(EXPERIMENTS)}}} serve [options]")
        return 2
    EXPERIMENTS[args[0]]()
    from service.cli import main as cli_main

    return cli_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())

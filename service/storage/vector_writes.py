"""The vector engine's timestamp of the last acknowledged insert per collection (Milvus only).

Every replica searches "as of" it, which is read-your-writes across replicas without Strong's wait.
"""

from __future__ import annotations

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from service.storage.schema import vector_writes_table


class VectorWriteRepository:
    """Record and read the per-collection engine timestamp (kept monotonic across racing replicas)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record_vector_write(self, collection_pk: int, engine_ts: int) -> None:
        """Remember the engine timestamp of an acknowledged write (kept monotonic; replicas race)."""
        table = vector_writes_table
        for _ in range(3):
            with self._engine.begin() as conn:
                current = conn.execute(
                    select(table.c.engine_ts).where(table.c.collection_pk == collection_pk)
                ).scalar_one_or_none()
                if current is not None:
                    conn.execute(
                        update(table)
                        .where(table.c.collection_pk == collection_pk, table.c.engine_ts < engine_ts)
                        .values(engine_ts=engine_ts)
                    )
                    return
            try:
                with self._engine.begin() as conn:
                    conn.execute(insert(table).values(collection_pk=collection_pk, engine_ts=engine_ts))
                return
            except IntegrityError:  # another replica inserted it first (or the collection is gone)
                continue

    def vector_write_ts(self, collection_pk: int) -> int:
        """The engine timestamp a search must see (0: no write recorded)."""
        with self._engine.connect() as conn:
            value = conn.execute(
                select(vector_writes_table.c.engine_ts).where(
                    vector_writes_table.c.collection_pk == collection_pk
                )
            ).scalar_one_or_none()
        return int(value or 0)

"""The durable store: the source of truth every index is rebuilt from.

SQLite (WAL, synchronous=FULL) by default, PostgreSQL through the same SQLAlchemy Core code.
``FaceStore`` owns the engine, brings the schema up to date at start-up, and hands out one
repository per aggregate; every write is one transaction.

    engine.py         the engine (SQLite pragmas) and the row clock
    schema.py         every table, and the ordered start-up migrations
    collections.py    collections (revision, counts, own identify threshold)
    subjects.py       subjects
    faces.py          faces, thumbnails, the embedding streams indexes rebuild from
    vector_writes.py  the vector engine's last acknowledged write per collection
    idempotency.py    Idempotency-Key records (service/domain/idempotency.py)
"""

from __future__ import annotations

from sqlalchemy import Engine, select

from service.storage.collections import CollectionRepository
from service.storage.engine import make_engine
from service.storage.faces import FaceRepository
from service.storage.idempotency import IdempotencyRepository
from service.storage.schema import migrate
from service.storage.subjects import SubjectRepository
from service.storage.vector_writes import VectorWriteRepository


class FaceStore:
    """The engine and the repositories over it: collections, subjects, faces, vector writes,
    idempotency keys."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.collections = CollectionRepository(engine)
        self.subjects = SubjectRepository(engine)
        self.faces = FaceRepository(engine)
        self.vector_writes = VectorWriteRepository(engine)
        self.idempotency = IdempotencyRepository(engine)

    @classmethod
    def from_url(cls, url: str) -> FaceStore:
        """The store of ``url``, its schema created or brought up to date."""
        store = cls(make_engine(url))
        store.create_schema()
        return store

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    def create_schema(self) -> None:
        """Create missing tables and run the start-up migrations (each logs what it changed)."""
        migrate(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(select(1))

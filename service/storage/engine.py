"""The SQLAlchemy engine the store runs on, and the clock its rows are stamped with.

SQLite gets WAL, a full fsync on every commit, enforced foreign keys and a generous busy timeout;
PostgreSQL gets a pre-pinged connection pool. Nothing else in the store knows which one it runs on.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection

# Run inside a write's own transaction with what it wrote (an Idempotency-Key completion,
# service/domain/idempotency.py): it commits or rolls back with the write.
InTransaction = Callable[[Connection, Any], None]


def utc_now() -> datetime:
    """The timestamp every row is written with."""
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """SQLite drops the zone; everything we stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def make_engine(url: str) -> Engine:
    """Create the engine; SQLite gets WAL, full fsync on commit and enforced foreign keys."""
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)

"""The SQLAlchemy engine the store runs on, and the clock its rows are stamped with.

SQLite gets WAL, a full fsync on every commit, enforced foreign keys and a generous busy timeout;
PostgreSQL gets a pre-pinged connection pool. Nothing else in the store knows which one it runs on.
On both, a statement or commit that finds the disk or quota full (SQLITE_FULL; SQLSTATE 53100
disk_full) raises ``InsufficientStorage`` (507) after the transaction is rolled back, instead of a
driver error that would be a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, ExceptionContext

from service.errors import InsufficientStorage

logger = logging.getLogger(__name__)

_SQLITE_FULL = 13  # sqlite3.h: "Insertion failed because database is full" (ENOSPC, EDQUOT, max_page_count)
_PG_DISK_FULL = "53100"  # SQLSTATE disk_full (ENOSPC and EDQUOT on the server's data directory)
_STORE_FULL = (
    "The store is out of disk space{why}: the write was rolled back and nothing was stored or changed. "
    "Reads, identify and verify keep working. Free space on the store's volume (or raise its quota), "
    "then retry{sqlite_note}."
)
_SQLITE_NOTE = (
    "; deleting needs free space too, because SQLite writes every change, deletes included, to its "
    "write-ahead log first (the operator's steps are in the README, section Reliability)"
)

# Run inside a write's own transaction with what it wrote (an Idempotency-Key completion,
# service/domain/idempotency.py): it commits or rolls back with the write.
InTransaction = Callable[[Connection, Any], None]


def utc_now() -> datetime:
    """The timestamp every row is written with."""
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """SQLite drops the zone; everything we stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def storage_full(error: BaseException) -> bool:
    """Whether a DBAPI error says the database's disk or quota is full."""
    if getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL:
        return True
    if "database or disk is full" in str(error):  # drivers without the numeric code
        return True
    return getattr(error, "sqlstate", None) == _PG_DISK_FULL


def _raise_when_full(context: ExceptionContext) -> None:
    error = context.original_exception
    if not storage_full(error):
        return
    sqlite = context.engine is not None and context.engine.dialect.name == "sqlite"
    logger.error(
        "store disk full (%s): %s", context.engine.url.render_as_string() if context.engine else "?", error
    )
    detail = _STORE_FULL.format(
        why="" if sqlite else " (PostgreSQL: SQLSTATE 53100 disk_full)",
        sqlite_note=_SQLITE_NOTE if sqlite else "",
    )
    raise InsufficientStorage(detail, storage="store") from error


def make_engine(url: str) -> Engine:
    """Create the engine; SQLite gets WAL, full fsync on commit and enforced foreign keys."""
    engine = _make_engine(url)
    event.listen(engine, "handle_error", _raise_when_full)
    return engine


def _make_engine(url: str) -> Engine:
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

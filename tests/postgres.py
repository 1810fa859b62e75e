"""A throw-away PostgreSQL server for tests (Debian's postgresql binaries, a cluster in a temp dir)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_BIN_CANDIDATES = [Path("/usr/lib/postgresql") / v / "bin" for v in ("17", "16", "15", "14")]


def pg_bin() -> Path | None:
    for candidate in PG_BIN_CANDIDATES:
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; drop to the 'postgres' account when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextmanager
def postgres_server(data_volume: Path | None = None) -> Iterator[str]:
    """Yields a SQLAlchemy URL of a fresh database; the server is stopped and removed afterwards.

    ``data_volume``: a directory (e.g. a small tmpfs) for the cluster's data files, its write-ahead
    log staying in the temp dir, so filling the volume fails statements with disk_full (53100)
    instead of stopping the server (PostgreSQL stops when it cannot write its WAL)."""
    binaries = pg_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL binaries (initdb) not found")
    # Directly under /tmp: the 'postgres' account cannot traverse pytest's private (0700) temp dirs.
    base = Path(tempfile.mkdtemp(prefix="faces-pg-"))
    data = base / "pgdata" if data_volume is None else data_volume / "pgdata"
    wal = [] if data_volume is None else ["--waldir", str(base / "pg_wal")]
    if os.geteuid() == 0:
        shutil.chown(base, user="postgres")
        if data_volume is not None:
            shutil.chown(data_volume, user="postgres")
    subprocess.run(
        _as_postgres_user(
            [str(binaries / "initdb"), "-D", str(data), *wal, "-A", "trust", "-U", "postgres", "--no-sync"]
        ),
        check=True,
        capture_output=True,
    )
    port = _free_port()
    log = base / "postgres.log"
    subprocess.run(
        _as_postgres_user(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off",
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(binaries / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            )
            if ready.returncode == 0:
                break
            time.sleep(0.2)
        subprocess.run(
            [str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "faces"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/faces"
    finally:
        subprocess.run(
            _as_postgres_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


def create_database(server_url: str) -> str:
    """A new, empty database on the server of ``server_url``; returns its URL."""
    from sqlalchemy import create_engine, text

    name = f"faces_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def store_url(kind: str, request: pytest.FixtureRequest, tmp: Path) -> str:
    """A database URL on ``kind`` ("sqlite" | "postgresql"): a new SQLite file under ``tmp``, or
    a new database on the session's PostgreSQL server (so tests never see each other's rows)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp}/faces.db"
    server_url: str = request.getfixturevalue("postgres_url")  # tests/conftest.py
    return create_database(server_url)

"""A full disk is a clear answer: 507 insufficient_storage naming what is full, never a 500.

The SQLite store, a PostgreSQL cluster's data files and the FAISS snapshot directory live on a small
tmpfs (mounting needs root: skipped where it is not allowed, except under CI=true where it must run).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.errors import InsufficientStorage
from service.main import create_app
from service.storage.store import FaceStore
from tests.postgres import create_database, pg_bin, postgres_server
from tests.test_api import assert_problem, make_settings

Mount = Callable[[str], Path]


@pytest.fixture
def tmpfs() -> Iterator[Mount]:
    """``mount("2m")``: a fresh tmpfs of that size, unmounted afterwards. Directly under /tmp and
    traversable, so the 'postgres' account can use it too (pytest's temp dirs are private)."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        target = Path(tempfile.mkdtemp(prefix="faces-tmpfs-"))
        target.chmod(0o755)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            target.rmdir()
            if os.environ.get("CI") == "true":
                pytest.fail(f"cannot mount a tmpfs under CI: {done.stderr.strip()}")
            pytest.skip(f"mounting a tmpfs is not allowed here: {done.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)
        with contextlib.suppress(OSError):
            target.rmdir()


def _photos(lfw_root: Path, count: int) -> list[tuple[str, bytes]]:
    people = sorted(p for p in (lfw_root / "images").iterdir() if p.is_dir())[:count]
    return [(person.name, sorted(person.glob("*.jpg"))[0].read_bytes()) for person in people]


def _enroll(client: TestClient, person: str, data: bytes) -> Any:
    return client.post(
        f"/v1/collections/full/subjects/{person}/faces",
        params={"create_subject": "true", "face_selection": "largest"},
        files={"images": ("p.jpg", data, "image/jpeg")},
    )


def _enroll_until_refused(client: TestClient, photos: list[tuple[str, bytes]]) -> tuple[list[str], Any]:
    """Enroll one photo after another until one is refused: (who was enrolled, the refusal)."""
    enrolled: list[str] = []
    for person, data in photos:
        response = _enroll(client, person, data)
        if response.status_code != 201:
            return enrolled, response
        enrolled.append(person)
    return enrolled, None


def test_sqlite_on_a_full_disk_answers_507_keeps_serving_and_recovers(
    tmpfs: Mount, tmp_path: Path, lfw_root: Path
) -> None:
    volume = tmpfs("2m")
    filler = volume / "filler"
    filler.write_bytes(b"\0" * 1_200_000)  # leaves room for a few enrollments
    settings = make_settings(tmp_path, database_url=f"sqlite:///{volume}/faces.db")
    photos = _photos(lfw_root, 80)
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/collections", json={"name": "full"}).status_code == 201
        enrolled, refused = _enroll_until_refused(client, photos)
        assert refused is not None, "the 2 MB volume never filled"
        body = assert_problem(refused, 507, "insufficient_storage")
        assert body["storage"] == "store"
        assert "nothing was stored" in body["detail"]
        assert len(enrolled) >= 2

        # Nothing half-written: exactly the acknowledged faces are stored, and the file is sound.
        assert client.get("/v1/collections/full").json()["face_count"] == len(enrolled)
        assert sqlite3.connect(volume / "faces.db").execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # Reads and identify keep working.
        assert client.get("/v1/collections/full/subjects", params={"limit": 100}).json()["total"] == len(
            enrolled
        )
        probe = client.post(
            "/v1/collections/full/identify", files={"image": ("p.jpg", photos[0][1], "image/jpeg")}
        )
        assert probe.status_code == 200
        assert probe.json()["faces"][0]["match"]["subject_id"] == enrolled[0]
        # A delete needs room in the write-ahead log too: refused, saying why and what to do.
        refused_delete = client.delete(f"/v1/collections/full/subjects/{enrolled[0]}")
        detail = assert_problem(refused_delete, 507, "insufficient_storage")["detail"]
        assert "write-ahead log" in detail
        assert "Free space" in detail
        assert client.get(f"/v1/collections/full/subjects/{enrolled[0]}").status_code == 200

        # Space comes back: the same process deletes and enrolls again, no restart.
        filler.unlink()
        assert client.delete(f"/v1/collections/full/subjects/{enrolled[0]}").status_code == 204
        person, data = photos[len(enrolled)]
        assert _enroll(client, person, data).status_code == 201
        assert client.get("/v1/collections/full").json()["face_count"] == len(enrolled)
        assert client.get("/readyz").json()["checks"]["index"] == "in_sync"
    assert sqlite3.connect(volume / "faces.db").execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_postgresql_on_a_full_disk_answers_507_deletes_and_recovers(
    tmpfs: Mount, tmp_path: Path, lfw_root: Path
) -> None:
    """PostgreSQL's data files on a 64 MB tmpfs (its WAL elsewhere: a server that cannot write its
    WAL stops, which no API answer can help): disk_full (53100) → 507; deletes need no new space."""
    if pg_bin() is None and os.environ.get("CI") != "true":
        pytest.skip("PostgreSQL binaries not installed")
    volume = tmpfs("64m")
    photos = _photos(lfw_root, 150)
    with (
        postgres_server(data_volume=volume) as url,
        TestClient(create_app(make_settings(tmp_path, database_url=url))) as client,
    ):
        assert client.post("/v1/collections", json={"name": "full"}).status_code == 201
        filler = volume / "filler"
        filler.write_bytes(b"\0" * (shutil.disk_usage(volume).free - 300_000))
        enrolled, refused = _enroll_until_refused(client, photos)
        assert refused is not None, "the volume never filled"
        body = assert_problem(refused, 507, "insufficient_storage")
        assert body["storage"] == "store"
        assert "53100" in body["detail"]
        assert client.get("/v1/collections/full").json()["face_count"] == len(enrolled)
        probe = client.post(
            "/v1/collections/full/identify", files={"image": ("p.jpg", photos[0][1], "image/jpeg")}
        )
        assert probe.json()["faces"][0]["match"]["subject_id"] == enrolled[0]
        assert client.delete(f"/v1/collections/full/subjects/{enrolled[0]}").status_code == 204
        filler.unlink()
        person, data = photos[len(enrolled)]
        assert _enroll(client, person, data).status_code == 201
        assert client.get("/readyz").json()["checks"]["index"] == "in_sync"


def test_a_full_snapshot_directory_does_not_fail_shutdown_and_the_index_is_rebuilt(
    tmpfs: Mount, tmp_path: Path, lfw_root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    snapshots = tmpfs("64k")
    (snapshots / "filler").write_bytes(b"\0" * (64 * 1024 - 4096))
    settings = make_settings(tmp_path, index_dir=snapshots)
    photos = _photos(lfw_root, 6)
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/collections", json={"name": "full"}).status_code == 201
        for person, data in photos:
            assert _enroll(client, person, data).status_code == 201
    # Shutdown saved what fit and said what did not; no partial file is left behind.
    assert any("index snapshot of collection" in r.getMessage() for r in caplog.records)
    assert not list(snapshots.glob("*.tmp"))
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").json()["checks"]["index"] == "in_sync"
        probe = client.post(
            "/v1/collections/full/identify", files={"image": ("p.jpg", photos[3][1], "image/jpeg")}
        )
        assert probe.json()["faces"][0]["match"]["subject_id"] == photos[3][0]


def test_postgresql_disk_full_is_insufficient_storage(postgres_url: str) -> None:
    """SQLSTATE 53100 from a real server (raised on purpose: filling a server's disk would PANIC its
    WAL writer rather than fail one statement) becomes InsufficientStorage, the transaction undone."""
    store = FaceStore.from_url(create_database(postgres_url))
    name = f"pg-{uuid.uuid4().hex[:8]}"
    insert = "INSERT INTO collections (name, description, revision, created_at) VALUES (:n, '', 0, now())"
    disk_full = "DO $$ BEGIN RAISE EXCEPTION 'could not extend file' USING ERRCODE = 'disk_full'; END $$"

    def write() -> None:
        with store.engine.begin() as conn:
            conn.execute(text(insert), {"n": name})
            conn.execute(text(disk_full))

    try:
        with pytest.raises(InsufficientStorage) as raised:
            write()
        assert raised.value.status == 507
        assert raised.value.extra["storage"] == "store"
        assert "53100" in raised.value.detail
        with store.engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM collections WHERE name = :n"), {"n": name})
            assert count.scalar_one() == 0
    finally:
        store.close()

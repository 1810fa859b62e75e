"""Subjects stored the old way (before the edge refused them) are repaired at start-up and read back.

The rows are written with raw SQL, as an older release stored them: metadata with lone surrogates
(every read answered 500), nested 256 deep (500 too), megabytes large, deeper than the configured
bound; on SQLite and PostgreSQL. After one start-up every row reads back 200, alone and in the
listing; nothing is lost (what is moved aside is kept as JSON text), and a second start-up changes
nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.main import create_app
from service.storage.store import FaceStore
from service.storage.subject_repair import MOVED_ASIDE_KEY
from tests.postgres import store_url
from tests.test_api import make_settings


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"k": value}
    return value


# subject id → metadata as an old release stored it (JSON text: escapes kept as written)
OLD_ROWS: dict[str, str] = {
    "surrogate-value": '{"k": "a\\ud800b", "ok": "fine"}',
    "surrogate-key": '{"\\udfff": 1}',
    "deep-256": json.dumps(nested(255)),
    "deep-40": json.dumps(nested(39)),
    "huge": json.dumps({"blob": "x" * 200_000}),
    "fine": json.dumps({"team": "blue", "tags": ["a", "b"]}),
}


@pytest.fixture(params=["sqlite", "postgresql"])
def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    """A database with collection 'old' created by the service, then subjects inserted raw."""
    url = store_url(request.param, request, tmp_path)
    with TestClient(create_app(make_settings(tmp_path, database_url=url))) as client:
        assert client.post("/v1/collections", json={"name": "old"}).status_code == 201
    engine = create_engine(url)
    meta_value = "CAST(:meta AS JSON)" if engine.dialect.name == "postgresql" else ":meta"
    with engine.begin() as conn:
        pk = conn.execute(text("SELECT pk FROM collections WHERE name = 'old'")).scalar_one()
        for subject_id, meta in OLD_ROWS.items():
            conn.execute(
                text(
                    "INSERT INTO subjects (collection_pk, subject_id, name, meta, created_at) "
                    f"VALUES (:pk, :sid, :name, {meta_value}, CURRENT_TIMESTAMP)"
                ),
                {"pk": pk, "sid": subject_id, "name": f"Old {subject_id}", "meta": meta},
            )
    engine.dispose()
    return url, tmp_path


def test_old_rows_are_repaired_at_start_up_and_read_back(
    old_database: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    url, tmp = old_database
    settings = make_settings(tmp, database_url=url)
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as client:
        read = {sid: client.get(f"/v1/collections/old/subjects/{sid}") for sid in OLD_ROWS}
        listing = client.get("/v1/collections/old/subjects", params={"limit": 100})
    assert {sid: r.status_code for sid, r in read.items()} == dict.fromkeys(OLD_ROWS, 200)
    assert listing.status_code == 200
    assert listing.json()["total"] == len(OLD_ROWS)
    meta = {sid: r.json()["metadata"] for sid, r in read.items()}

    assert meta["surrogate-value"] == {"k": "a\ufffdb", "ok": "fine"}
    assert meta["surrogate-key"] == {"\ufffd": 1}
    assert meta["fine"] == {"team": "blue", "tags": ["a", "b"]}
    # Too deep or too large for the configured bounds: kept whole, as JSON text under one key.
    for sid in ("deep-256", "deep-40", "huge"):
        assert list(meta[sid]) == [MOVED_ASIDE_KEY]
        assert json.loads(meta[sid][MOVED_ASIDE_KEY]) == json.loads(OLD_ROWS[sid])

    repairs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("repaired stored subject")]
    assert len(repairs) == 5, repairs  # one log line per repaired row, naming it
    assert any("'deep-256'" in line and "moved aside" in line for line in repairs)

    # Idempotent: the next start-up finds nothing to repair and the rows stay as repaired.
    caplog.clear()
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as client:
        again = {
            sid: client.get(f"/v1/collections/old/subjects/{sid}").json()["metadata"] for sid in OLD_ROWS
        }
    assert again == meta
    assert not [r for r in caplog.records if r.getMessage().startswith("repaired stored subject")]


def test_without_configured_bounds_only_what_no_configuration_serves_is_repaired(
    old_database: tuple[str, Path],
) -> None:
    """Tools that open the store without the service's settings repair surrogates and nesting
    deeper than any configurable depth, and leave rows that a larger configured bound accepts."""
    url, _tmp = old_database
    store = FaceStore.from_url(url)
    try:
        subjects = {s.subject_id: s.metadata for s in store.subjects.list_subjects("old", 0, 100)[0]}
    finally:
        store.close()
    assert subjects["surrogate-value"]["k"] == "a\ufffdb"
    assert list(subjects["deep-256"]) == [MOVED_ASIDE_KEY]
    assert subjects["deep-40"] == nested(39)
    assert subjects["huge"] == {"blob": "x" * 200_000}

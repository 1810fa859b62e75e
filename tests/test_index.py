"""FAISS index against a brute-force reference, and its snapshot/rebuild rules against the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from service.domain.gallery import Gallery
from service.index.faiss_index import IndexRegistry
from service.index.flat_index import CollectionIndex
from service.storage.records import NewFace
from service.storage.store import FaceStore


def unit_vectors(n: int, dim: int = 128, seed: int = 0) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return np.ascontiguousarray(v / np.linalg.norm(v, axis=1, keepdims=True))


def test_search_matches_brute_force_and_removal() -> None:
    vectors = unit_vectors(500)
    ids = np.arange(1000, 1500, dtype=np.int64)
    index = CollectionIndex(128)
    index.add(ids, vectors)
    queries = unit_vectors(7, seed=1)
    sims, found = index.search(queries, 10)
    brute = queries @ vectors.T
    for q in range(len(queries)):
        order = np.argsort(-brute[q])[:10]
        assert found[q].tolist() == (ids[order]).tolist()
        np.testing.assert_allclose(sims[q], brute[q, order], atol=1e-5)
    removed = found[:, 0]
    assert index.remove(np.unique(removed)) == len(np.unique(removed))
    _, after = index.search(queries, 10)
    assert not set(after.ravel().tolist()) & set(removed.tolist())
    assert index.ntotal == 500 - len(np.unique(removed))


def test_unnormalised_input_is_normalised() -> None:
    index = CollectionIndex(4)
    index.add(np.array([1, 2], dtype=np.int64), np.array([[3, 0, 0, 0], [0, 5, 0, 0]], dtype=np.float32))
    sims, ids = index.search(np.array([[10, 0, 0, 0]], dtype=np.float32), 2)
    assert ids[0].tolist() == [1, 2]
    np.testing.assert_allclose(sims[0], [1.0, 0.0], atol=1e-6)


def test_empty_index_searches_to_nothing() -> None:
    sims, ids = CollectionIndex(128).search(unit_vectors(2), 5)
    assert sims.shape == (2, 0)
    assert ids.shape == (2, 0)


def _store_with_faces(tmp_path: Path, n: int) -> tuple[FaceStore, int]:
    store = FaceStore.from_url(f"sqlite:///{tmp_path}/faces.db")
    coll = store.collections.create_collection("c")
    faces = [NewFace(embedding=v, box=(0, 0, 1, 1), quality={}) for v in unit_vectors(n)]
    store.faces.add_faces("c", "s", faces, create_subject=True)
    return store, coll.pk


def test_snapshot_is_used_only_when_it_matches_the_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, pk = _store_with_faces(tmp_path, 50)
    registry = IndexRegistry(store.faces, 128, tmp_path / "index")
    registry.load_all([pk])
    assert registry.get(pk).ntotal == 50
    registry.save_snapshots()

    caplog.set_level("INFO")
    fresh = IndexRegistry(store.faces, 128, tmp_path / "index")
    fresh.load_all([pk])
    assert "loaded snapshot" in caplog.text
    assert fresh.get(pk).ids().tolist() == registry.get(pk).ids().tolist()

    # The store moves on (a write the snapshot never saw, e.g. before a crash): rebuild.
    store.faces.add_faces(
        "c",
        "s",
        [NewFace(embedding=unit_vectors(1, seed=9)[0], box=(0, 0, 1, 1), quality={})],
        create_subject=False,
    )
    caplog.clear()
    stale = IndexRegistry(store.faces, 128, tmp_path / "index")
    stale.load_all([pk])
    assert "rebuilding" in caplog.text
    assert stale.get(pk).ntotal == 51
    assert stale.out_of_sync() == []


def test_corrupt_snapshot_falls_back_to_rebuild(tmp_path: Path) -> None:
    store, pk = _store_with_faces(tmp_path, 20)
    registry = IndexRegistry(store.faces, 128, tmp_path / "index")
    registry.load_all([pk])
    registry.save_snapshots()
    (tmp_path / "index" / f"collection-{pk}.faiss").write_bytes(b"garbage")
    rebuilt = IndexRegistry(store.faces, 128, tmp_path / "index")
    rebuilt.load_all([pk])
    assert rebuilt.get(pk).ntotal == 20


def test_read_write_lock_shares_reads_and_lets_a_waiting_writer_go_first() -> None:
    import threading

    from service.index.base import ReadWriteLock

    lock = ReadWriteLock()
    order: list[str] = []
    first_reader_in = threading.Event()
    release_first_reader = threading.Event()

    def long_reader() -> None:
        with lock.read():
            first_reader_in.set()
            release_first_reader.wait(5)
            order.append("reader-1 out")

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def late_reader() -> None:
        with lock.read():
            order.append("reader-2")

    t1 = threading.Thread(target=long_reader)
    t1.start()
    assert first_reader_in.wait(5)
    with lock.read():  # a second reader is not blocked by the first
        order.append("concurrent reader")
    tw = threading.Thread(target=writer)
    tw.start()
    while not lock._writers_waiting:  # the writer now waits for reader-1
        pass
    t2 = threading.Thread(target=late_reader)
    t2.start()
    release_first_reader.set()
    for thread in (t1, tw, t2):
        thread.join(5)
    assert order == ["concurrent reader", "reader-1 out", "writer", "reader-2"]


def test_concurrent_searches_and_writes_stay_consistent() -> None:
    from concurrent.futures import ThreadPoolExecutor

    index = CollectionIndex(128)
    base = unit_vectors(2000)
    index.add(np.arange(2000, dtype=np.int64), base)
    extra = unit_vectors(200, seed=5)

    def search(i: int) -> list[int]:
        _, ids = index.search(base[i : i + 1], 1)
        return ids[0].tolist()

    def add(i: int) -> None:
        index.add(np.array([10_000 + i], dtype=np.int64), extra[i : i + 1])

    with ThreadPoolExecutor(4) as pool:
        searches = [pool.submit(search, i) for i in range(200)]
        writes = [pool.submit(add, i) for i in range(200)]
        for i, future in enumerate(searches):
            assert future.result() == [i]  # each stored vector finds itself
        for future in writes:
            future.result()
    assert index.ntotal == 2200


def test_gallery_search_ranks_subjects_and_a_deleted_collection_searches_empty(tmp_path: Path) -> None:
    store = FaceStore.from_url(f"sqlite:///{tmp_path / 'g.db'}")
    registry = IndexRegistry(store.faces, 128, tmp_path / "index", use_gpu=False)
    gallery = Gallery(store, registry)
    pk = gallery.create_collection("people", "").pk
    vectors = unit_vectors(6, seed=3)
    for person, rows in (("ann", vectors[:3]), ("bob", vectors[3:])):
        faces = [NewFace(embedding=v, box=(0, 0, 1, 1), quality={}) for v in rows]
        gallery.add_faces("people", person, faces, create_subject=True)

    (ranked,) = gallery.search(pk, vectors[4:5], top_k=5)
    assert [c.subject_id for c in ranked] == ["bob", "ann"]  # one candidate per subject, best first
    assert ranked[0].distance == pytest.approx(0.0, abs=1e-5)

    gallery.delete_collection("people")
    assert gallery.search(pk, vectors[:2], top_k=5) == [[], []]
    assert registry.find(pk) is None  # searching did not bring the deleted collection's index back
    store.close()

"""Big collections: coalesced exact scans and the compressed index (PQ4 fast scan or IVF-SQ8, then
exact re-ranking),
checked against brute force on real LFW embeddings mixed with distractors."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray

from service.index.compressed_index import CompressedCollectionIndex, CompressedParams
from service.index.faiss_index import IndexRegistry
from service.index.flat_index import CollectionIndex
from service.main import create_app
from service.settings import Settings
from service.storage.records import NewFace
from service.storage.store import FaceStore
from tests.embeddings import LfwGallery, embed_lfw_people, unit_vectors

PARAMS = CompressedParams(codec="SQ8", nlist=16, nprobe=4, rerank=64, train_sample=2_000)
ALL_CELLS = CompressedParams(codec="SQ8", nlist=16, nprobe=16, rerank=64, train_sample=2_000)  # exact
PQ4 = CompressedParams(codec="PQ4", rerank=64, train_sample=2_000)


@pytest.fixture(scope="module")
def lfw(lfw_root: Path) -> LfwGallery:
    return embed_lfw_people(lfw_root, 24)


def _gallery(lfw: LfwGallery, distractors: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The real enrolled faces (pks 1..72) followed by random unit-vector distractors."""
    real = np.concatenate(list(lfw.enrolled.values()))
    vectors = np.concatenate([real, unit_vectors(distractors, seed=3)]).astype(np.float32)
    return np.arange(1, len(vectors) + 1, dtype=np.int64), np.ascontiguousarray(vectors)


def _probes(lfw: LfwGallery) -> NDArray[np.float32]:
    return np.ascontiguousarray(np.stack(list(lfw.probes.values())), dtype=np.float32)


def _brute(
    queries: NDArray[np.float32], ids: NDArray[np.int64], vectors: NDArray[np.float32], k: int
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    sims = queries @ vectors.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


@pytest.mark.parametrize("block_threads", [1, 3])
def test_concurrent_identify_calls_are_scanned_together_with_the_lone_answers(
    lfw: LfwGallery, block_threads: int
) -> None:
    ids, vectors = _gallery(lfw, 40_000)  # 3 slabs: a block split over 3 threads, heaps merged
    index = CollectionIndex(128, min_block=2, block_threads=block_threads)
    index.add(ids, vectors)
    probes = _probes(lfw)
    lone = [index.search(probes[i : i + 1], 10) for i in range(len(probes))]
    answers: list[tuple[NDArray[np.float32], NDArray[np.int64]] | None] = [None] * len(probes)

    def identify(i: int) -> None:
        answers[i] = index.search(probes[i : i + 1], 10 if i % 2 else 5)  # mixed k in one block

    # A writer holds the index while the calls arrive, so they queue and are answered as blocks.
    with index._lock.write():
        threads = [threading.Thread(target=identify, args=(i,)) for i in range(len(probes))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(index._queue.pending) < len(probes) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    for thread in threads:
        thread.join()
    blocks, coalesced = index.coalesced_calls
    assert blocks >= 1
    assert coalesced >= len(probes) - 1
    for i, answer in enumerate(answers):
        assert answer is not None
        k = 10 if i % 2 else 5
        assert answer[1][0].tolist() == lone[i][1][0, :k].tolist()
        np.testing.assert_allclose(answer[0][0], lone[i][0][0, :k], atol=1e-5)
    _expected_sims, expected_ids = _brute(probes, ids, vectors, 10)
    assert np.array_equal(np.stack([a[1][0] for a in lone]), expected_ids)


def test_compressed_index_answers_like_brute_force_with_exact_similarities(
    lfw: LfwGallery, tmp_path: Path
) -> None:
    ids, vectors = _gallery(lfw, 5_000)
    batches = [(ids[s : s + 1000], vectors[s : s + 1000]) for s in range(0, len(ids), 1000)]
    index = CompressedCollectionIndex.build(128, tmp_path / "v.vectors", batches, PARAMS)
    assert index.ntotal == len(ids)
    probes = _probes(lfw)
    exact_sims, exact_ids = _brute(probes, ids, vectors, 10)
    sims, found = index.search(probes, 10)
    # Similarities are the exact fp32 inner products of the returned faces, not code estimates.
    np.testing.assert_allclose(sims, np.einsum("qd,qkd->qk", probes, vectors[found - 1]), atol=1e-6)
    assert np.mean(found[:, 0] == exact_ids[:, 0]) >= 0.75  # 4 of 16 cells probed
    people = np.concatenate([np.repeat(np.arange(len(lfw.enrolled)), 3), np.full(5_000, -1)])
    right = np.arange(len(probes))
    assert np.mean(people[found[:, 0] - 1] == right) >= np.mean(people[exact_ids[:, 0] - 1] == right) - 0.2

    # Every cell probed: the re-ranked answer is the brute-force one, order and values.
    index.tune(nprobe=16, rerank=64)
    sims, found = index.search(probes, 10)
    assert np.array_equal(found, exact_ids)
    np.testing.assert_allclose(sims, exact_sims, atol=1e-6)


def test_pq_fast_scan_codes_give_the_brute_force_answers_with_exact_similarities(
    lfw: LfwGallery, tmp_path: Path
) -> None:
    """PQ4 has no cells to miss: with 64 candidates re-ranked out of ~5k faces, every probe's
    nearest face and its exact similarity come back (measured at 1M/10M by bench_bigindex)."""
    ids, vectors = _gallery(lfw, 5_000)
    batches = [(ids[s : s + 1000], vectors[s : s + 1000]) for s in range(0, len(ids), 1000)]
    index = CompressedCollectionIndex.build(128, tmp_path / "v.vectors", batches, PQ4)
    assert index.info().params["codec"] == "PQ4"
    assert index.info().params["nlist"] == 0
    probes = np.concatenate([_probes(lfw), unit_vectors(50, seed=8)])  # real probes and strangers
    exact_sims, exact_ids = _brute(probes, ids, vectors, 10)
    sims, found = index.search(probes, 10)
    np.testing.assert_allclose(sims, np.einsum("qd,qkd->qk", probes, vectors[found - 1]), atol=1e-6)
    assert np.array_equal(found[:, 0], exact_ids[:, 0])
    np.testing.assert_allclose(sims[:, 0], exact_sims[:, 0], atol=1e-6)
    recall_at_10 = np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact_ids, strict=True)])
    assert recall_at_10 >= 0.9  # the top 10 too, not only the top 1 (near-ties among distractors)


@pytest.mark.parametrize("params", [PARAMS, PQ4], ids=["SQ8", "PQ4"])
def test_compressed_index_adds_deletes_and_reloads_its_snapshot(
    lfw: LfwGallery, tmp_path: Path, params: CompressedParams
) -> None:
    ids, vectors = _gallery(lfw, 3_000)
    index = CompressedCollectionIndex.build(128, tmp_path / "v.vectors", [(ids, vectors)], params)
    probes = _probes(lfw)
    new_ids = np.arange(100_000, 100_000 + len(probes), dtype=np.int64)
    index.add(new_ids, probes)  # each probe enrolled: it is its own nearest face, at d² 0
    sims, found = index.search(probes, 3)
    assert found[:, 0].tolist() == new_ids.tolist()
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-6)
    assert index.remove(new_ids[:5]) == 5
    assert index.remove(new_ids[:5]) == 0
    _, after = index.search(probes[:5], 3)
    assert not set(after.ravel().tolist()) & set(new_ids[:5].tolist())
    assert index.tombstones == 5
    assert index.ntotal == len(ids) + len(probes) - 5
    index.add(new_ids[:1], probes[:1])  # a removed pk comes back
    assert index.search(probes[:1], 1)[1][0, 0] == new_ids[0]

    path = tmp_path / "compressed-1.ivf"
    index.save(path, index.manifest(1, revision=7))
    loaded, manifest = CompressedCollectionIndex.load(path, 128, dataclasses.replace(params, codec="fp16"))
    assert (manifest.revision, manifest.ntotal, manifest.codec) == (7, index.ntotal, params.codec)
    assert loaded.params.codec == params.codec  # the snapshot's codes, whatever is configured now
    for q in (probes, unit_vectors(5, seed=9)):
        expected, got = index.search(q, 10), loaded.search(q, 10)
        assert np.array_equal(expected[1], got[1])
        np.testing.assert_array_equal(expected[0], got[0])
    assert np.array_equal(loaded.ids(), index.ids())


def _store(tmp_path: Path, lfw: LfwGallery, distractors: int) -> tuple[FaceStore, int]:
    store = FaceStore.from_url(f"sqlite:///{tmp_path}/faces.db")
    coll = store.collections.create_collection("c")
    for person, faces in lfw.enrolled.items():
        store.faces.add_faces(
            "c",
            person,
            [NewFace(embedding=v, box=(0, 0, 1, 1), quality={}) for v in faces],
            create_subject=True,
        )
    noise = [NewFace(embedding=v, box=(0, 0, 1, 1), quality={}) for v in unit_vectors(distractors, seed=4)]
    store.faces.add_faces("c", "distractors", noise, create_subject=True)
    return store, coll.pk


def _store_ids(store: FaceStore, pk: int) -> NDArray[np.int64]:
    return np.sort(np.concatenate([ids for ids, _ in store.faces.iter_embeddings(pk)]))


def test_registry_picks_the_index_by_size_and_switches_in_the_background(
    lfw: LfwGallery, tmp_path: Path
) -> None:
    store, pk = _store(tmp_path, lfw, 1_000)
    size = store.faces.face_count(pk)
    exact = IndexRegistry(
        store.faces, 128, tmp_path / "exact", compressed_min_faces=size + 10, compressed=ALL_CELLS
    )
    exact.load_all([pk])
    assert exact.index_info(pk).kind == "exact"

    # Crossing the threshold: the exact index keeps serving while the compressed one trains.
    probes = _probes(lfw)
    new = [NewFace(embedding=v, box=(0, 0, 1, 1), quality={}) for v in unit_vectors(20, seed=5)]
    records = store.faces.add_faces("c", "more", new, create_subject=True)
    exact.add(pk, np.array([r.pk for r in records], dtype=np.int64), unit_vectors(20, seed=5))
    late = store.faces.add_faces(
        "c", "late", [NewFace(embedding=probes[0], box=(0, 0, 1, 1), quality={})], create_subject=True
    )
    exact.add(pk, np.array([late[0].pk], dtype=np.int64), probes[:1])  # during or after the build
    exact.wait_for_builds(60)
    info = exact.index_info(pk)
    assert (info.kind, info.state, info.faces) == ("compressed", "ready", size + 21)
    assert info.params["nlist"] == 16
    assert info.params["codec"] == "SQ8"
    assert np.array_equal(exact.get(pk).ids(), _store_ids(store, pk))
    assert exact.search(pk, probes[:1], 1)[1][0, 0] == late[0].pk
    exact.close()

    # At start-up the store's size decides, and the compressed snapshot is reused when current.
    reloaded = IndexRegistry(
        store.faces, 128, tmp_path / "exact", compressed_min_faces=size, compressed=ALL_CELLS
    )
    reloaded.load_all([pk])
    assert reloaded.index_info(pk).kind == "compressed"
    assert np.array_equal(reloaded.get(pk).ids(), _store_ids(store, pk))
    ref_sims, ref_ids = _brute(probes, *_store_vectors(store, pk), 5)
    sims, found = reloaded.search(pk, probes, 5)
    assert np.array_equal(found[:, 0], ref_ids[:, 0])
    np.testing.assert_allclose(sims[:, 0], ref_sims[:, 0], atol=1e-5)
    vector_files = sorted((tmp_path / "exact").glob("*.vectors"))
    assert len(vector_files) == 1  # the one in use; nothing left behind

    never = IndexRegistry(store.faces, 128, tmp_path / "never", compressed_min_faces=0, compressed=PARAMS)
    never.load_all([pk])
    assert never.index_info(pk).kind == "exact"
    reloaded.drop(pk)
    assert not list((tmp_path / "exact").glob("compressed-*"))


def _store_vectors(store: FaceStore, pk: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    parts = list(store.faces.iter_embeddings(pk))
    ids = np.concatenate([i for i, _ in parts])
    vectors = np.concatenate([v for _, v in parts]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return ids, vectors


def test_api_serves_a_compressed_collection_with_exact_distances_and_shows_its_state(
    tmp_path: Path, lfw_image: Callable[[str, int], Path]
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/faces.db",
        index_dir=tmp_path / "index",
        compressed_index_min_faces=4,  # the fourth face switches the collection
    )
    people = {"George_W_Bush": [1, 2], "Tony_Blair": [1, 2], "Colin_Powell": [1, 2]}
    with TestClient(create_app(settings)) as client:
        client.post("/v1/collections", json={"name": "big"}).raise_for_status()
        assert client.get("/v1/collections/big").json()["index"]["kind"] == "exact"
        enrolled = 0
        for person, numbers in people.items():
            files = [
                ("images", (f"{n}.jpg", lfw_image(person, n).read_bytes(), "image/jpeg")) for n in numbers
            ]
            response = client.post(
                f"/v1/collections/big/subjects/{person}/faces", params={"create_subject": "true"}, files=files
            )
            assert response.status_code == 201, response.text
            enrolled += int(response.json()["enrolled"])
        deadline = time.monotonic() + 60
        index = client.get("/v1/collections/big").json()["index"]
        while (index["kind"], index["state"]) != ("compressed", "ready") and time.monotonic() < deadline:
            time.sleep(0.2)
            index = client.get("/v1/collections/big").json()["index"]
        assert (index["kind"], index["state"], index["faces"]) == ("compressed", "ready", enrolled)
        assert index["params"]["codec"] == "PQ4"  # the default codes
        assert client.get("/readyz").json()["checks"]["compressed_indexes"]["big"]["kind"] == "compressed"

        probe = lfw_image("George_W_Bush", 10).read_bytes()
        body = client.post("/v1/collections/big/identify", files={"image": probe}).json()
        face = body["faces"][0]
        assert face["match"]["subject_id"] == "George_W_Bush"
        for candidate in face["candidates"]:
            assert candidate["similarity"] == pytest.approx(1 - candidate["distance"] / 2, abs=1e-6)

    # The same store served by the exact scan answers the same, to the distance.
    exact = settings.model_copy(update={"compressed_index_min_faces": 0})
    with TestClient(create_app(exact)) as client:
        assert client.get("/v1/collections/big").json()["index"]["kind"] == "exact"
        reference = client.post("/v1/collections/big/identify", files={"image": probe}).json()
    assert [c["face_id"] for c in reference["faces"][0]["candidates"]] == [
        c["face_id"] for c in face["candidates"]
    ]
    for got, want in zip(face["candidates"], reference["faces"][0]["candidates"], strict=True):
        assert got["distance"] == pytest.approx(want["distance"], abs=1e-6)

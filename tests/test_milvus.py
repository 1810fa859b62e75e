"""The Milvus engine (milvus-lite, in-process) against the FAISS engine on the same store and real faces.

Same answers from ``Gallery.search`` on both; repairs of every way Milvus can differ from the store.
The consistency handling cannot be tested here (milvus-lite is always strongly consistent): the
real-server lane (tests/test_milvus_server.py) does that.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.domain.gallery import Gallery
from service.domain.ranking import Candidate
from service.errors import VectorEngineUnavailable
from service.index.base import VectorIndex
from service.index.faiss_index import IndexRegistry
from service.storage.records import NewFace
from service.storage.store import FaceStore
from service.testing.synthetic import bulk_insert_synthetic
from tests.embeddings import LfwGallery, embed_lfw_people, enroll_into, unit_vectors
from tests.milvus_server import require_pymilvus

require_pymilvus()

from service.index.milvus_index import MilvusIndex  # noqa: E402


@pytest.fixture(scope="module")
def lfw_people(lfw_root: Path) -> LfwGallery:
    return embed_lfw_people(lfw_root, 24)


def fill_store(store: FaceStore, people: LfwGallery) -> None:
    """Real people, 2 000 random distractors, a subject with 300 near-copies of one probe (forces the
    ranking to ask for more hits), and a second collection holding the probes themselves (a search
    that leaked across collections would find them at distance 0)."""
    store.collections.create_collection("office")
    enroll_into(store, "office", people)
    bulk_insert_synthetic(store, "office", "distractor-", unit_vectors(2_000, seed=3), faces_per_subject=4)
    first = next(iter(people.probes.values()))
    noise = unit_vectors(300, seed=4) * 0.15
    crowd = first[None, :] + noise
    crowd /= np.linalg.norm(crowd, axis=1, keepdims=True)
    store.faces.add_faces(
        "office",
        "crowd",
        [NewFace(embedding=v.astype(np.float32), box=(0.0, 0.0, 1.0, 1.0), quality={}) for v in crowd],
        create_subject=True,
    )
    store.collections.create_collection("elsewhere")
    store.faces.add_faces(
        "elsewhere",
        "leak",
        [NewFace(embedding=v, box=(0.0, 0.0, 1.0, 1.0), quality={}) for v in people.probes.values()],
        create_subject=True,
    )


def answers(gallery: Gallery, queries: np.ndarray, top_k: int) -> list[list[Candidate]]:
    return gallery.search(
        gallery.store.collections.collection_pk("office"), queries.astype(np.float32), top_k
    )


@pytest.fixture
def store(tmp_path: Path, lfw_people: LfwGallery) -> Iterator[FaceStore]:
    store = FaceStore.from_url(f"sqlite:///{tmp_path}/faces.db")
    fill_store(store, lfw_people)
    yield store
    store.close()


def milvus(store: FaceStore, tmp_path: Path) -> MilvusIndex:
    index = MilvusIndex(store.faces, 128, uri=str(tmp_path / "milvus.db"), collection="faces_test")
    index.load_all([c.pk for c in store.collections.list_collections()])
    return index


def test_both_engines_implement_the_protocol(store: FaceStore, tmp_path: Path) -> None:
    engines: list[VectorIndex] = [
        IndexRegistry(store.faces, 128, tmp_path / "index"),
        milvus(store, tmp_path),
    ]
    assert [e.engine for e in engines] == ["faiss", "milvus"]


@pytest.mark.parametrize("top_k", [1, 5, 40])
def test_same_answers_on_faiss_and_milvus(
    store: FaceStore, tmp_path: Path, lfw_people: LfwGallery, top_k: int
) -> None:
    faiss_index = IndexRegistry(store.faces, 128, tmp_path / "index")
    faiss_index.load_all([c.pk for c in store.collections.list_collections()])
    on_faiss, on_milvus = Gallery(store, faiss_index), Gallery(store, milvus(store, tmp_path))
    probes = np.stack(list(lfw_people.probes.values()))
    expected, got = answers(on_faiss, probes, top_k), answers(on_milvus, probes, top_k)
    for person, want, have in zip(lfw_people.probes, expected, got, strict=True):
        assert [(c.subject_id, c.face_id) for c in have] == [(c.subject_id, c.face_id) for c in want]
        np.testing.assert_allclose([c.distance for c in have], [c.distance for c in want], atol=1e-5)
        assert len(have) == top_k
        assert "leak" not in {c.subject_id for c in have}
        assert have[0].subject_id in (person, "crowd")  # real people are found by their 4th photo
    # The crowd's 300 faces come first for the first probe: other subjects need a wider search.
    assert got[0][0].subject_id == "crowd"
    if top_k > 1:
        assert got[0][1].subject_id == next(iter(lfw_people.probes))


def test_writes_through_the_gallery_are_searchable_and_removable(
    store: FaceStore, tmp_path: Path, lfw_people: LfwGallery
) -> None:
    gallery = Gallery(store, milvus(store, tmp_path))
    person, probe = next(iter(lfw_people.probes.items()))
    gallery.delete_subject("office", "crowd")
    gallery.delete_subject("office", person)
    assert person not in {c.subject_id for c in answers(gallery, probe[None], 5)[0]}
    office = store.collections.collection_pk("office")
    written_before = store.vector_writes.vector_write_ts(office)
    gallery.add_faces(
        "office",
        person,
        [NewFace(embedding=v, box=(0.0, 0.0, 1.0, 1.0), quality={}) for v in lfw_people.enrolled[person]],
        create_subject=True,
    )
    assert answers(gallery, probe[None], 1)[0][0].subject_id == person
    # milvus-lite is always consistent and reports no write timestamps (the server lane checks them);
    # the store keeps the newest one any replica reports, never going backwards.
    assert store.vector_writes.vector_write_ts(office) == written_before == 0
    for reported in (500, 200, 700):
        store.vector_writes.record_vector_write(office, reported)
    assert store.vector_writes.vector_write_ts(office) == 700
    gallery.delete_collection("elsewhere")
    assert gallery.index_out_of_sync() == []


def test_reconcile_repairs_every_difference(store: FaceStore, tmp_path: Path, lfw_people: LfwGallery) -> None:
    index = milvus(store, tmp_path)
    gallery = Gallery(store, index)
    office = store.collections.collection_pk("office")
    assert gallery.index_out_of_sync() == []
    # 1. Faces that reached the store but not Milvus (a crash between the two writes).
    person, probe = list(lfw_people.probes.items())[1]  # the first one has the crowd around it
    store.faces.add_faces("office", "late", [NewFace(probe, (0, 0, 1, 1), {})], create_subject=True)
    # 2. A face deleted from the store but not from Milvus, 3. a doubled row, 4. an orphan collection.
    removed = store.faces.delete_face("office", store.faces.list_faces("office", person)[0].face_id)
    index.add(office, np.array([5_000_000], dtype=np.int64), unit_vectors(1, seed=9))
    doubled = store.faces.list_faces("office", "distractor-0")[0]
    index.add(office, np.array([doubled.pk], dtype=np.int64), unit_vectors(1, seed=10))
    index.add(999, np.array([6_000_000], dtype=np.int64), unit_vectors(1, seed=11))
    assert office in gallery.index_out_of_sync()
    assert removed.pk in set(index.search(office, probe[None], 50)[1][0].tolist())

    report = gallery.reconcile_index()  # the periodic pass: counts first, then pk by pk
    assert (report.inserted, report.deleted) == (1, 3)  # the doubled row is fixed in place
    assert gallery.index_out_of_sync() == []
    assert index.sizes([office])[office] == store.faces.face_count(office)
    assert index.count(999) == 0
    hits = index.search(office, probe[None], 50)[1][0].tolist()
    assert removed.pk not in hits
    assert answers(gallery, probe[None], 1)[0][0].subject_id == "late"
    assert gallery.reconcile_index(full=True).changed == 0  # idempotent


def test_start_up_fills_an_empty_engine_and_survives_a_reopen(store: FaceStore, tmp_path: Path) -> None:
    first = milvus(store, tmp_path)
    pks = [c.pk for c in store.collections.list_collections()]
    assert first.sizes(pks) == {pk: store.faces.face_count(pk) for pk in pks}
    first.close()
    again = MilvusIndex(store.faces, 128, uri=str(tmp_path / "milvus.db"), collection="faces_test")
    assert again.reconcile(pks, full=True).changed == 0


def test_a_collection_of_another_dimension_is_refused(store: FaceStore, tmp_path: Path) -> None:
    milvus(store, tmp_path).close()
    with pytest.raises(VectorEngineUnavailable, match="another layout"):
        MilvusIndex(store.faces, 64, uri=str(tmp_path / "milvus.db"), collection="faces_test")

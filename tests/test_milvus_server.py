"""Integration lane: the Milvus engine against a real Milvus 2.3.5 server (PyPI wheel ``milvus``).

What milvus-lite cannot show: read-your-writes across API replicas (separate processes, separate
Milvus clients) at the configured consistency, a Milvus restart, and start-up repair at 10k faces.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.domain.gallery import Gallery
from service.index.faiss_index import IndexRegistry
from service.storage.store import FaceStore
from service.testing.server import ServerProcess
from service.testing.synthetic import bulk_insert_synthetic
from tests.embeddings import embed_lfw_people, enroll_into, unit_vectors
from tests.milvus_server import MilvusServer, free_port, require_pymilvus
from tests.test_crash import milvus_env

require_pymilvus()

from service.index.milvus_index import AnnIndex, MilvusIndex  # noqa: E402

pytestmark = pytest.mark.slow
LfwImage = Callable[[str, int], Path]
PEOPLE = ["Colin_Powell", "George_W_Bush", "Serena_Williams", "Tony_Blair", "Gerhard_Schroeder"]


def identify(url: str, data: bytes) -> dict[str, object] | None:
    response = httpx.post(
        f"{url}/v1/collections/office/identify", files={"image": ("p.jpg", data, "image/jpeg")}, timeout=30
    )
    assert response.status_code == 200, response.text
    match: dict[str, object] | None = response.json()["faces"][0]["match"]
    return match


def test_read_your_writes_across_replicas_and_a_milvus_restart(
    milvus_server: MilvusServer, tmp_path: Path, lfw_image: LfwImage
) -> None:
    env = milvus_env(milvus_server, f"ryw_{free_port()}")
    replica_a, replica_b = ServerProcess(tmp_path, env=env), ServerProcess(tmp_path, env=env)
    try:
        replica_a.start()
        replica_b.start()
        assert httpx.post(f"{replica_a.url}/v1/collections", json={"name": "office"}).status_code == 201
        for person in PEOPLE:
            enrolled = httpx.post(
                f"{replica_a.url}/v1/collections/office/subjects/{person}/faces",
                params={"create_subject": "true", "face_selection": "largest"},
                files={"images": ("1.jpg", lfw_image(person, 1).read_bytes(), "image/jpeg")},
                timeout=30,
            )
            assert enrolled.status_code == 201, enrolled.text
            # At once, on the other replica (another process, another Milvus connection).
            match = identify(replica_b.url, lfw_image(person, 2).read_bytes())
            assert match is not None, f"{person} enrolled through A is not found through B"
            assert match["subject_id"] == person
        # A delete through B is seen by A at once.
        assert httpx.delete(f"{replica_b.url}/v1/collections/office/subjects/{PEOPLE[0]}").status_code == 204
        match = identify(replica_a.url, lfw_image(PEOPLE[0], 2).read_bytes())
        assert match is None or match["subject_id"] != PEOPLE[0]
        for replica in (replica_a, replica_b):
            ready = httpx.get(f"{replica.url}/readyz").json()
            assert ready["checks"]["vector_engine"] == "milvus"
            assert ready["checks"]["index"] == "in_sync", ready

        replica_a.kill()  # B keeps answering alone
        match = identify(replica_b.url, lfw_image(PEOPLE[1], 3).read_bytes())
        assert match is not None
        assert match["subject_id"] == PEOPLE[1]

        milvus_server.stop()  # and Milvus itself restarts: nothing acknowledged is lost
        unavailable = httpx.post(
            f"{replica_b.url}/v1/collections/office/identify",
            files={"image": ("p.jpg", lfw_image(PEOPLE[1], 3).read_bytes(), "image/jpeg")},
            timeout=60,
        )
        assert unavailable.status_code == 503, unavailable.text
        assert unavailable.json()["code"] == "index_unavailable"
        milvus_server.start()
        deadline = time.monotonic() + 60
        while httpx.get(f"{replica_b.url}/readyz", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, httpx.get(f"{replica_b.url}/readyz").text
            time.sleep(0.5)
        for person in PEOPLE[1:]:
            match = identify(replica_b.url, lfw_image(person, 2).read_bytes())
            assert match is not None
            assert match["subject_id"] == person
    finally:
        replica_a.stop()
        replica_b.stop()


def test_start_up_repair_and_same_answers_at_ten_thousand_faces(
    milvus_server: MilvusServer, tmp_path: Path, lfw_root: Path
) -> None:
    people = embed_lfw_people(lfw_root, 20)
    store = FaceStore.from_url(f"sqlite:///{tmp_path}/faces.db")
    store.collections.create_collection("office")
    enroll_into(store, "office", people)
    distractors = unit_vectors(10_000 - 60, seed=5)
    bulk_insert_synthetic(store, "office", "distractor-", distractors, faces_per_subject=5)
    pks = [c.pk for c in store.collections.list_collections()]
    name = f"big_{free_port()}"

    started = time.perf_counter()
    index = MilvusIndex(store.faces, 128, uri=milvus_server.uri, collection=name)
    index.load_all(pks)  # an empty engine: every face inserted by the start-up reconciliation
    fill_s = time.perf_counter() - started
    assert index.sizes(pks) == {pks[0]: 10_000}
    assert fill_s < 120, fill_s

    faiss_index = IndexRegistry(store.faces, 128, tmp_path / "index")
    faiss_index.load_all(pks)
    probes = np.stack(list(people.probes.values()))
    on_faiss = Gallery(store, faiss_index).search(pks[0], probes, 5)
    on_milvus = Gallery(store, index).search(pks[0], probes, 5)
    for want, have in zip(on_faiss, on_milvus, strict=True):
        assert [(c.subject_id, c.face_id) for c in have] == [(c.subject_id, c.face_id) for c in want]
        np.testing.assert_allclose([c.distance for c in have], [c.distance for c in want], atol=1e-5)
    tops = [ranked[0].subject_id for ranked in on_milvus]
    found = sum(top == person for top, person in zip(tops, people.probes, strict=True))
    assert found >= 18  # real people found by an unseen photo among 10k faces

    # A second engine instance (another replica's client) sees a write of the first one at once,
    # searching as of the write's timestamp (what the store carries between replicas).
    other = MilvusIndex(store.faces, 128, uri=milvus_server.uri, collection=name)
    fresh = unit_vectors(1, seed=77)
    written = index.add(pks[0], np.array([9_000_000], dtype=np.int64), fresh)
    assert written > 0
    assert other.search(pks[0], fresh, 1, visible_after=written)[1][0, 0] == 9_000_000
    index.remove(pks[0], np.array([9_000_000], dtype=np.int64))
    index.remove(pks[0], np.array([store.faces.list_faces("office", next(iter(people.probes)))[0].pk]))
    assert other.out_of_sync(pks) == pks
    assert other.reconcile(pks).inserted == 1  # the periodic pass puts the store's face back
    assert index.out_of_sync(pks) == []
    other.close()
    index.close()
    store.close()


@pytest.mark.parametrize(
    "ann",
    [AnnIndex("HNSW", hnsw_m=8, hnsw_ef_construction=100, hnsw_ef=32), AnnIndex("IVF_FLAT", ivf_nlist=32)],
    ids=["HNSW", "IVF_FLAT"],
)
def test_an_approximate_index_on_the_server(
    milvus_server: MilvusServer, tmp_path: Path, lfw_root: Path, ann: AnnIndex
) -> None:
    """FACES_MILVUS_INDEX on a real server: the index is built on sealed segments with the configured
    parameters, a reopened collection is searched as what it has, and real people are still found."""
    people = embed_lfw_people(lfw_root, 20)
    store = FaceStore.from_url(f"sqlite:///{tmp_path}/faces.db")
    store.collections.create_collection("office")
    enroll_into(store, "office", people)
    bulk_insert_synthetic(store, "office", "distractor-", unit_vectors(3_000, seed=6), faces_per_subject=5)
    pks = [c.pk for c in store.collections.list_collections()]
    name = f"ann_{free_port()}"
    index = MilvusIndex(store.faces, 128, uri=milvus_server.uri, collection=name, ann=ann)
    index.load_all(pks)
    index.flush()  # sealed segments get the index; growing ones are scanned
    deadline = time.monotonic() + 120
    while (state := index.index_state())["indexed_rows"] < 3_060 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state["index_type"] == ann.kind
    assert state["indexed_rows"] == 3_060, state
    for key, value in ann.build_params().items():
        assert int(state[key]) == value, state

    reopened = MilvusIndex(store.faces, 128, uri=milvus_server.uri, collection=name)  # configured: FLAT
    assert reopened.ann.kind == ann.kind
    assert reopened.ann.build_params() == ann.build_params()
    probes = np.stack(list(people.probes.values()))
    faiss_index = IndexRegistry(store.faces, 128, tmp_path / "index")
    faiss_index.load_all(pks)
    exact = Gallery(store, faiss_index).search(pks[0], probes, 5)
    for engine in (index, reopened):
        approx = Gallery(store, engine).search(pks[0], probes, 5)
        assert [r[0].subject_id for r in approx] == [r[0].subject_id for r in exact]
    reopened.destroy()
    reopened.close()
    index.close()
    store.close()


def test_a_failed_call_replaces_the_connection(milvus_server: MilvusServer, tmp_path: Path) -> None:
    """A replica never needs a restart after a Milvus outage: the call that fails answers 503 at
    once, a fresh connection is opened in the background, and the next calls go through it."""
    from pymilvus import MilvusException

    from service.errors import VectorEngineUnavailable

    store = FaceStore.from_url(f"sqlite:///{tmp_path}/faces.db")
    collection_pk = store.collections.create_collection("office").pk
    index = MilvusIndex(store.faces, 128, uri=milvus_server.uri, collection=f"reconnect_{free_port()}")
    index.load_all([collection_pk])
    vectors = unit_vectors(3, seed=11)
    written = index.add(collection_pk, np.array([1, 2, 3], dtype=np.int64), vectors)
    assert index.search(collection_pk, vectors[:1], 1, visible_after=written)[1][0, 0] == 1

    broken = index._client

    def unreachable(*_args: object, **_kwargs: object) -> object:
        raise MilvusException(message="Fail connecting to server (injected)")

    broken.search = unreachable  # type: ignore[method-assign]
    with pytest.raises(VectorEngineUnavailable):
        index.search(collection_pk, vectors[:1], 1)
    # While the fresh connection is being opened and checked, calls fail at once (no waiting).
    deadline = time.monotonic() + 30
    while True:
        try:
            sims, pks = index.search(collection_pk, vectors, 1, visible_after=written)
            break
        except VectorEngineUnavailable:
            assert time.monotonic() < deadline, "no fresh connection after a failed call"
            time.sleep(0.05)
    assert index._client is not broken
    assert pks[:, 0].tolist() == [1, 2, 3]
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    index.close()
    store.close()


def test_an_outage_never_duplicates_and_heals_at_once(
    milvus_server: MilvusServer, tmp_path: Path, lfw_image: LfwImage
) -> None:
    """Milvus stopped: an enrollment is acknowledged as stored (201, its face id, searchable=false),
    never "503 but stored"; blind retries with its Idempotency-Key store nothing more; a delete says
    it was done. Milvus back: the stored writes are pushed at once (not at the periodic reconcile,
    set here to 10 minutes away) and the face is found within seconds."""
    env = {
        **milvus_env(milvus_server, f"outage_{free_port()}"),
        "FACES_INDEX_RETRY_INTERVAL_S": "0.5",
        "FACES_INDEX_RECONCILE_INTERVAL_S": "600",
    }
    replica = ServerProcess(tmp_path, env=env)
    url = f"{replica.url}/v1/collections/office"

    def enroll(person: str, n: int, key: str | None) -> httpx.Response:
        return httpx.post(
            f"{url}/subjects/{person}/faces",
            params={"create_subject": "true", "face_selection": "largest"},
            files={"images": (f"{n}.jpg", lfw_image(person, n).read_bytes(), "image/jpeg")},
            headers={"Idempotency-Key": key} if key else {},
            timeout=120,
        )

    try:
        replica.start()
        assert httpx.post(f"{replica.url}/v1/collections", json={"name": "office"}).status_code == 201
        for person in PEOPLE[:3]:
            assert enroll(person, 1, None).status_code == 201

        milvus_server.stop()
        first = enroll(PEOPLE[3], 1, "outage-1")
        assert first.status_code == 201, first.text
        assert first.json()["searchable"] is False
        face_id = first.json()["results"][0]["face_id"]
        for _ in range(2):  # the retries a client would make after an error: nothing new stored
            retry = enroll(PEOPLE[3], 1, "outage-1")
            assert retry.status_code == 201, retry.text
            assert retry.json() == first.json()
        unkeyed = enroll(PEOPLE[4], 1, None)  # no key: acknowledged too, so no client retries it
        assert unkeyed.status_code == 201, unkeyed.text
        assert unkeyed.json()["searchable"] is False
        deleted = httpx.delete(f"{url}/subjects/{PEOPLE[0]}", timeout=120)
        assert deleted.status_code == 200, deleted.text
        assert deleted.json()["index_pending"] is True
        assert httpx.get(f"{url}/subjects/{PEOPLE[3]}/faces").json()["faces"][0]["face_id"] == face_id
        assert httpx.get(url).json()["face_count"] == 4  # 3 - 1 + 2, whatever the retries
        ready = httpx.get(f"{replica.url}/readyz", timeout=120)
        assert ready.status_code == 503
        assert ready.json()["checks"]["index_pending_writes"] == 3

        milvus_server.start()
        # Milvus answers before it has loaded the collection again (tens of seconds on a busy
        # machine): the clock starts when it can serve a Strong read of it, as identify needs.
        from pymilvus import MilvusClient, MilvusException

        probe = MilvusClient(uri=milvus_server.uri, timeout=10)
        deadline = time.monotonic() + 120
        while True:
            try:
                probe.query(env["FACES_MILVUS_COLLECTION"], filter="pk >= 0", output_fields=["count(*)"])
                break
            except MilvusException:
                assert time.monotonic() < deadline, "Milvus never loaded the collection again"
                time.sleep(0.1)
        probe.close()
        serving = time.monotonic()
        while True:
            found = httpx.post(
                f"{url}/identify",
                files={"image": ("p.jpg", lfw_image(PEOPLE[3], 2).read_bytes(), "image/jpeg")},
                timeout=120,
            )
            match = found.json()["faces"][0]["match"] if found.status_code == 200 else None
            if match is not None:
                break
            assert time.monotonic() - serving < 5, found.text  # pushed at once, not in 10 minutes
            time.sleep(0.1)
        healed_s = time.monotonic() - serving
        assert match["face_id"] == face_id
        while (ready := httpx.get(f"{replica.url}/readyz", timeout=30)).status_code != 200:
            assert time.monotonic() - serving < 10, ready.text
            time.sleep(0.1)
        assert ready.json()["checks"]["index_pending_writes"] == 0, ready.text
        gone = identify(replica.url, lfw_image(PEOPLE[0], 2).read_bytes())
        assert gone is None or gone["subject_id"] != PEOPLE[0]
        assert httpx.get(url).json()["face_count"] == 4
        print(f"outage: the face was found {healed_s:.2f}s after Milvus served the collection")
    finally:
        replica.stop()

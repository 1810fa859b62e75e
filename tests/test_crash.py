"""SIGKILL a real uvicorn process in the middle of a stream of enrollments; nothing acknowledged is lost."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from service.testing.milvus_server import MilvusServer
from service.testing.server import ServerProcess, descendants, free_port, start_time
from tests.helpers import giant_png
from tests.test_api import LfwImage

pytestmark = pytest.mark.slow


def milvus_env(server: MilvusServer, collection: str) -> dict[str, str]:
    """A replica on the real Milvus server, in its own Milvus collection."""
    return {
        "FACES_VECTOR_BACKEND": "milvus",
        "FACES_MILVUS_URI": server.uri,
        "FACES_MILVUS_COLLECTION": collection,
    }


@pytest.fixture(params=["faiss", "milvus-server"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """A `faces serve` process on embedded FAISS, or on the real Milvus server (acks = store + Milvus)."""
    extra = {}
    if request.param == "milvus-server":
        extra = milvus_env(request.getfixturevalue("milvus_server"), f"crash_{free_port()}")
    # An attempt killed mid-request frees its Idempotency-Key after this (the retry below waits).
    extra["FACES_IDEMPOTENCY_IN_FLIGHT_TIMEOUT_S"] = "3"
    srv = ServerProcess(tmp_path, env=extra)
    yield srv
    srv.stop()


@dataclass
class Ledger:
    """What the clients were told: acknowledged face ids, and the uploads still in flight."""

    acked: dict[str, str] = field(default_factory=dict)  # face_id → source hash
    in_flight: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def single_face_images(lfw_root: Path, count: int) -> list[tuple[str, bytes]]:
    people = sorted(p for p in (lfw_root / "images").iterdir() if p.is_dir())
    images = []
    for person in people:
        for path in sorted(person.glob("*.jpg"))[:2]:
            images.append((person.name, path.read_bytes()))
        if len(images) >= count:
            break
    return images


def stream_enrollments(
    url: str, images: list[tuple[str, bytes]], ledger: Ledger, stop: threading.Event
) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for person, data in images:
            if stop.is_set():
                return
            digest = hashlib.sha256(data).hexdigest()
            with ledger.lock:
                ledger.in_flight.add(digest)
            try:
                response = client.post(
                    f"/v1/collections/stream/subjects/{person}/faces",
                    params={"create_subject": "true", "face_selection": "largest"},
                    files={"images": ("face.jpg", data, "image/jpeg")},
                    headers={"Idempotency-Key": f"crash-{digest}"},
                )
            except httpx.HTTPError:
                return  # the server died under us: this upload stays "in flight"
            if response.status_code == 201:
                face_id = response.json()["results"][0]["face_id"]
                with ledger.lock:
                    ledger.acked[face_id] = digest
                    ledger.in_flight.discard(digest)


def stored_faces(url: str) -> dict[str, str]:
    faces: dict[str, str] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        subjects = client.get("/v1/collections/stream/subjects", params={"limit": 1000}).json()["items"]
        for subject in subjects:
            listed = client.get(f"/v1/collections/stream/subjects/{subject['subject_id']}/faces").json()
            faces.update({f["face_id"]: f["source_hash"] for f in listed["faces"]})
    return faces


def test_sigkill_during_enrollment_loses_nothing_acknowledged(server: ServerProcess, lfw_root: Path) -> None:
    images = single_face_images(lfw_root, 400)
    server.start(timeout_s=60)
    assert httpx.post(f"{server.url}/v1/collections", json={"name": "stream"}).status_code == 201
    ledger = Ledger()
    for round_number in range(2):
        stop = threading.Event()
        chunk = images[round_number * 200 : (round_number + 1) * 200]
        workers = [
            threading.Thread(target=stream_enrollments, args=(server.url, chunk[i::3], ledger, stop))
            for i in range(3)
        ]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 60
        target = 15 * (round_number + 1)
        while len(ledger.acked) < target and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(ledger.acked) >= target, server.log_tail()
        server.kill()  # mid-stream: three requests are in some stage of processing
        stop.set()
        for worker in workers:
            worker.join(timeout=30)

        server.start(timeout_s=60)
        stored = stored_faces(server.url)
        missing = set(ledger.acked) - set(stored)
        assert not missing, f"acknowledged faces lost after SIGKILL: {missing}"
        extra = {face_id: digest for face_id, digest in stored.items() if face_id not in ledger.acked}
        # Only uploads that were in flight when the process died may have landed, each at most once.
        assert set(extra.values()) <= ledger.in_flight
        assert len(extra) == len(set(extra.values()))
        ready = httpx.get(f"{server.url}/readyz").json()
        assert ready["checks"]["index"] == "in_sync"
        stats = httpx.get(f"{server.url}/v1/collections/stream").json()
        assert stats["face_count"] == len(stored)
        # A blind retry of every upload the crash left unanswered, with its Idempotency-Key: one that
        # landed answers its face again (its key record committed with it), the others enroll now;
        # either way, once each.
        uploads = {hashlib.sha256(data).hexdigest(): (person, data) for person, data in chunk}
        landed = {digest: face_id for face_id, digest in extra.items()}
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for digest in sorted(ledger.in_flight):
                person, data = uploads[digest]
                deadline = time.monotonic() + 30
                while True:
                    retry = client.post(
                        f"/v1/collections/stream/subjects/{person}/faces",
                        params={"create_subject": "true", "face_selection": "largest"},
                        files={"images": ("face.jpg", data, "image/jpeg")},
                        headers={"Idempotency-Key": f"crash-{digest}"},
                    )
                    if retry.status_code != 409:  # 409: the dead attempt's key, until its timeout
                        break
                    assert time.monotonic() < deadline, retry.text
                    time.sleep(float(retry.headers.get("Retry-After", "1")))
                assert retry.status_code == 201, retry.text
                face_id = retry.json()["results"][0]["face_id"]
                if digest in landed:
                    assert face_id == landed[digest], "a landed upload was enrolled again by its retry"
                    assert retry.headers.get("Idempotent-Replayed") == "true"
                ledger.acked[face_id] = digest
        after_retries = stored_faces(server.url)
        assert set(after_retries) == set(ledger.acked)
        assert len(set(after_retries.values())) == len(after_retries)  # every upload stored once
        ledger.in_flight.clear()

    # Every stored face is searchable after the restarts: its own photo finds it at distance ≈ 0.
    person, data = images[0]
    probe = httpx.post(
        f"{server.url}/v1/collections/stream/identify",
        files={"image": ("p.jpg", data, "image/jpeg")},
        timeout=30,
    ).json()
    assert probe["faces"][0]["match"]["subject_id"] == person
    assert probe["faces"][0]["match"]["distance"] < 0.01


def test_sigkill_leaves_no_child_process_behind(tmp_path: Path, lfw_image: LfwImage) -> None:
    """The large-image worker and multiprocessing's resource tracker die with a SIGKILLed server."""
    server = ServerProcess(tmp_path)
    server.start()
    try:
        assert httpx.post(f"{server.url}/v1/collections", json={"name": "orphans"}).status_code == 201
        giant = giant_png(side=4200, face=lfw_image("Colin_Powell", 1))  # 17.6 Mpx: the large lane
        response = httpx.post(
            f"{server.url}/v1/collections/orphans/identify",
            files={"image": ("giant.png", giant, "image/png")},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        children = descendants(server.pid)
        assert len(children) >= 2, f"expected the large-image worker and the resource tracker: {children}"
        server.kill()
        deadline = time.monotonic() + 5
        alive = children
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = {pid: t for pid, t in children.items() if start_time(pid) == t}
        assert not alive, f"processes outlived the SIGKILLed server: {alive}"
    finally:
        server.stop()

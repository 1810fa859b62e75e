"""bench_hostile's engine-outage lane (``python -m bench.bench_hostile --engine-outage``).

A real ``faces serve`` on a real Milvus 2.3.5 server (``service.testing.milvus_server``); Milvus is
stopped, and clients do what HTTP clients do on an error: retry. Per case: the statuses the client
saw, and how many faces the store holds afterwards for what was one enrollment. Then Milvus is
started again and the lane measures how long the face enrolled during the outage stays unfindable
after Milvus serves the collection again. ``--baseline-root`` runs the same against another checkout.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import Table, fmt
from service.testing.milvus_server import MilvusServer, free_port
from service.testing.server import ServerProcess

COLLECTION = "outage"
GALLERY = ("Colin_Powell", "George_W_Bush")
RETRIES = 2  # what a client library does after a 503 before giving up
FIND_TIMEOUT_S = 180.0


@dataclass(slots=True)
class OutageCase:
    name: str
    what: str
    statuses: list[str]
    faces_stored: int  # what the store holds for the subject afterwards (enrollments), -1 n/a
    note: str = ""


@dataclass(slots=True)
class OutageRun:
    label: str
    root: str
    cases: list[OutageCase] = field(default_factory=list)
    found_after_s: float | None = None  # after Milvus served again; None: not within the timeout
    pending_reported: Any = None  # /readyz checks.index_pending_writes during the outage


def _status(response: httpx.Response) -> str:
    if response.status_code >= 400:
        try:
            return f"{response.status_code}:{response.json().get('code', '?')}"
        except ValueError:
            return str(response.status_code)
    try:
        body = response.json()
    except ValueError:
        return str(response.status_code)
    if isinstance(body, dict) and body.get("searchable") is False:
        return f"{response.status_code}:searchable=false"
    if isinstance(body, dict) and body.get("index_pending") is True:
        return f"{response.status_code}:index_pending"
    return str(response.status_code)


def _retrying_enroll(client: httpx.Client, subject: str, photo: bytes, *, key: str | None) -> list[str]:
    """One enrollment by a client that retries a 5xx up to RETRIES times (Retry-After honoured)."""
    statuses: list[str] = []
    headers = {"Idempotency-Key": key} if key else {}
    for _ in range(1 + RETRIES):
        response = client.post(
            f"/v1/collections/{COLLECTION}/subjects/{subject}/faces",
            params={"create_subject": "true", "face_selection": "largest"},
            files={"images": (f"{subject}.jpg", photo, "image/jpeg")},
            headers=headers,
        )
        statuses.append(_status(response))
        if response.status_code < 500:
            break
        time.sleep(min(float(response.headers.get("Retry-After", "0.5")), 2.0))
    return statuses


def _faces_of(client: httpx.Client, subject: str) -> int:
    response = client.get(f"/v1/collections/{COLLECTION}/subjects/{subject}/faces")
    return len(response.json()["faces"]) if response.status_code == 200 else 0


def _wait_until_served(milvus: MilvusServer, collection: str) -> None:
    """Until Milvus answers a Strong read of the collection (it loads it again after a restart)."""
    from pymilvus import MilvusClient, MilvusException

    client = MilvusClient(uri=milvus.uri, timeout=10)
    deadline = time.monotonic() + 300
    try:
        while True:
            try:
                client.query(collection, filter="pk >= 0", output_fields=["count(*)"])
                return
            except MilvusException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        client.close()


def run_outage(
    label: str, root: Path | None, milvus: MilvusServer, photos: dict[str, list[bytes]]
) -> OutageRun:
    """The lane against one checkout (``root``; None: this one) on the shared Milvus server."""
    run = OutageRun(label=label, root=str(root or "."))
    milvus_collection = f"outage_{uuid.uuid4().hex[:8]}"
    env = {
        "FACES_VECTOR_BACKEND": "milvus",
        "FACES_MILVUS_URI": milvus.uri,
        "FACES_MILVUS_COLLECTION": milvus_collection,
        "FACES_LOG_LEVEL": "ERROR",
    }
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        server = ServerProcess(Path(tmp), env=env, repo_root=root)
        server.start()
        try:
            with httpx.Client(base_url=server.url, timeout=120) as client:
                client.post("/v1/collections", json={"name": COLLECTION}).raise_for_status()
                for person in GALLERY:
                    photo = photos[person][0]
                    files = {"images": ("g.jpg", photo, "image/jpeg")}
                    client.post(
                        f"/v1/collections/{COLLECTION}/subjects/{person}/faces",
                        params={"create_subject": "true", "face_selection": "largest"},
                        files=files,
                    ).raise_for_status()
                print(f"[{label}] Milvus stopped", flush=True)
                milvus.stop()
                try:
                    unkeyed = _retrying_enroll(
                        client, "Serena_Williams", photos["Serena_Williams"][0], key=None
                    )
                    run.cases.append(
                        OutageCase(
                            "enroll, retried, no key",
                            f"one enrollment; the client retries a 5xx up to {RETRIES}×",
                            unkeyed,
                            _faces_of(client, "Serena_Williams"),
                        )
                    )
                    keyed = _retrying_enroll(
                        client, "Tony_Blair", photos["Tony_Blair"][0], key=f"bench-{uuid.uuid4()}"
                    )
                    run.cases.append(
                        OutageCase(
                            "enroll, retried, Idempotency-Key",
                            f"the same with one Idempotency-Key for all {1 + RETRIES} attempts",
                            keyed,
                            _faces_of(client, "Tony_Blair"),
                        )
                    )
                    deleted = client.delete(f"/v1/collections/{COLLECTION}/subjects/{GALLERY[0]}")
                    gone = (
                        client.get(f"/v1/collections/{COLLECTION}/subjects/{GALLERY[0]}").status_code == 404
                    )
                    run.cases.append(
                        OutageCase(
                            "subject delete",
                            "DELETE a subject once",
                            [_status(deleted)],
                            -1,
                            "deleted in the store" if gone else "still in the store",
                        )
                    )
                    ready = client.get("/readyz")
                    run.pending_reported = (
                        ready.json().get("checks", {}).get("index_pending_writes", "absent")
                    )
                finally:
                    print(f"[{label}] Milvus started again", flush=True)
                    milvus.start()
                _wait_until_served(milvus, milvus_collection)
                served = time.monotonic()
                probe = photos["Serena_Williams"][1]
                while time.monotonic() - served < FIND_TIMEOUT_S:
                    response = client.post(
                        f"/v1/collections/{COLLECTION}/identify",
                        files={"image": ("p.jpg", probe, "image/jpeg")},
                    )
                    if response.status_code == 200:
                        match = response.json()["faces"][0]["match"]
                        if match is not None and match["subject_id"] == "Serena_Williams":
                            run.found_after_s = time.monotonic() - served
                            break
                    time.sleep(0.2)
        finally:
            server.stop()
    return run


def run_outage_lane(lfw_root: Path, runs: list[tuple[str, Path | None]]) -> tuple[list[OutageRun], Table]:
    """Every (label, root) in turn on one Milvus server; the table of what each did."""
    images = lfw_root / "images"
    photos = {
        person: [(images / person / f"{person}_{n:04d}.jpg").read_bytes() for n in (1, 2)]
        for person in (*GALLERY, "Serena_Williams", "Tony_Blair")
    }
    data_dir = Path(tempfile.mkdtemp(prefix="bench-outage-milvus-"))
    milvus = MilvusServer(data_dir, free_port())
    results: list[OutageRun] = []
    try:
        milvus.start()
        for label, root in runs:
            results.append(run_outage(label, root, milvus, photos))
    finally:
        milvus.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return results, outage_table(results)


def outage_table(runs: list[OutageRun]) -> Table:
    columns = ["case", "what"]
    for run in runs:
        columns += [f"{run.label}: statuses", "faces stored"]
    table = Table(
        f"Vector-engine outage (Milvus 2.3.5 server stopped), client retries up to {RETRIES}×", columns
    )
    for i, case in enumerate(runs[0].cases):
        row: list[object] = [case.name, case.what]
        for run in runs:
            mine = run.cases[i]
            row += [" ".join(mine.statuses), mine.note or mine.faces_stored]
        table.add(*row)
    found: list[object] = ["face findable after Milvus is back", "seconds after Milvus serves the collection"]
    pending: list[object] = ["/readyz during the outage", "checks.index_pending_writes"]
    for run in runs:
        found += [
            fmt(run.found_after_s, 2) if run.found_after_s is not None else f"> {FIND_TIMEOUT_S:.0f}",
            "",
        ]
        pending += [str(run.pending_reported), ""]
    table.add(*found)
    table.add(*pending)
    return table

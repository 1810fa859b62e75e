"""`faces enroll` (faces_client.enroll on faces_client.FacesClient): per-file outcomes, resumability,
retries — against a real server and an in-process fake."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.testclient import TestClient
from PIL import Image

from faces_client.client import backoff_delay
from faces_client.enroll import EnrollOptions, build_parser, enroll, main
from faces_client.progress import BarProgress, LineProgress, NoProgress, make_progress
from service.testing.server import REPO_ROOT, free_port, running_server

LfwImage = Callable[[str, int], Path]
PEOPLE = {"George_W_Bush": 3, "Colin_Powell": 2, "Serena_Williams": 2, "Gerhard_Schroeder": 2}


def _collection(name: str, subject_count: int = 0) -> dict[str, Any]:
    threshold = {"value": 1.0, "source": "model_card", "set_at": None}
    return {
        "name": name,
        "description": "",
        "created_at": "2026-01-01T00:00:00Z",
        "subject_count": subject_count,
        "face_count": 0,
        "identify_threshold": threshold,
        "verify_threshold": threshold,
    }


def _problem(status: int, code: str, detail: str) -> JSONResponse:
    body = {"type": f"about:blank#{code}", "title": code, "status": status, "detail": detail, "code": code}
    return JSONResponse(body, status_code=status, media_type="application/problem+json")


@dataclass
class FakeApi:
    """The enrollment endpoints of the API, in memory: JPEG/PNG magic = a face, anything else = 415.

    ``upload_failures`` is consumed one status per upload before the upload is really handled,
    so a test can script "503, 503, then fine".
    """

    api_key: str | None = None
    upload_failures: list[int] = field(default_factory=list)
    collections: set[str] = field(default_factory=set)
    faces: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    # Idempotency-Key of every upload, in arrival order: (filename, key).
    upload_keys: list[tuple[str, str | None]] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def check_key(request: Request, call_next: Any) -> Response:
            self.calls[f"{request.method} {request.url.path}"] += 1
            if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
                return _problem(401, "unauthorized", "Missing or invalid API key")
            response: Response = await call_next(request)
            return response

        @app.get("/v1/collections/{c}")
        async def get_collection(c: str) -> Response:
            if c not in self.collections:
                return _problem(404, "collection_not_found", c)
            return JSONResponse(_collection(c, sum(1 for key in self.faces if key[0] == c)))

        @app.post("/v1/collections")
        async def create_collection(request: Request) -> Response:
            name = (await request.json())["name"]
            if name in self.collections:
                return _problem(409, "collection_exists", name)
            self.collections.add(name)
            return JSONResponse(_collection(name), status_code=201)

        @app.delete("/v1/collections/{c}")
        async def delete_collection(c: str) -> Response:
            if c not in self.collections:
                return _problem(404, "collection_not_found", c)
            self.collections.discard(c)
            for key in [key for key in self.faces if key[0] == c]:
                del self.faces[key]
            return Response(status_code=204)

        @app.post("/v1/collections/{c}/subjects")
        async def create_subject(c: str, request: Request) -> Response:
            subject_id = (await request.json())["subject_id"]
            if (c, subject_id) in self.faces:
                return _problem(409, "subject_exists", subject_id)
            self.faces[(c, subject_id)] = []
            subject = {"subject_id": subject_id, "name": None, "metadata": {}, "face_count": 0}
            return JSONResponse(subject, status_code=201)

        @app.delete("/v1/collections/{c}/subjects/{s}")
        async def delete_subject(c: str, s: str) -> Response:
            if c not in self.collections:
                return _problem(404, "collection_not_found", c)
            if self.faces.pop((c, s), None) is None:
                return _problem(404, "subject_not_found", s)
            return Response(status_code=204)

        @app.get("/v1/collections/{c}/subjects/{s}/faces")
        async def list_faces(c: str, s: str) -> Response:
            if c not in self.collections:
                return _problem(404, "collection_not_found", c)
            if (c, s) not in self.faces:
                return _problem(404, "subject_not_found", s)
            return JSONResponse({"faces": self.faces[(c, s)]})

        @app.post("/v1/collections/{c}/subjects/{s}/faces")
        async def enroll_faces(c: str, s: str, request: Request) -> Response:
            form = await request.form()
            upload: Any = form["images"]
            self.upload_keys.append((upload.filename, request.headers.get("idempotency-key")))
            if self.upload_failures:
                status = self.upload_failures.pop(0)
                return _problem(status, f"http_{status}", "scripted failure")
            data = await upload.read()
            if data[:3] != b"\xff\xd8\xff" and data[:4] != b"\x89PNG":
                return _problem(415, "unsupported_media_type", "Only JPEG, PNG and WebP images are accepted.")
            if (c, s) not in self.faces:
                if request.query_params.get("create_subject") != "true":
                    return _problem(404, "subject_not_found", s)
                self.faces[(c, s)] = []
            face_id = f"face-{sum(len(v) for v in self.faces.values()) + 1}"
            self.faces[(c, s)].append({"face_id": face_id, "source_hash": form.get("source_hash")})
            result = {"filename": upload.filename, "status": "enrolled", "face_id": face_id}
            return JSONResponse({"subject_id": s, "results": [result]}, status_code=201)

        return app

    def transport(self) -> AppTransport:
        return AppTransport(self.app())


class AppTransport(httpx.BaseTransport):
    """The synchronous client's requests handed to an ASGI app in this process (through TestClient)."""

    def __init__(self, app: FastAPI) -> None:
        self.client = TestClient(app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        response = self.client.send(request)
        return httpx.Response(response.status_code, headers=response.headers, content=response.content)


class FlakyTransport(httpx.BaseTransport):
    """Fails the first ``failures`` requests matching ``method path``; ``after_send`` loses the reply."""

    def __init__(self, inner: httpx.BaseTransport, target: str, failures: int, *, after_send: bool) -> None:
        self.inner = inner
        self.target = target
        self.failures = failures
        self.after_send = after_send

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if f"{request.method} {request.url.path}".endswith(self.target) and self.failures > 0:
            self.failures -= 1
            if self.after_send:
                self.inner.handle_request(request)
                raise httpx.ReadError("connection reset after the request was sent", request=request)
            raise httpx.ConnectError("connection refused", request=request)
        return self.inner.handle_request(request)


def _options(root: Path, **overrides: Any) -> EnrollOptions:
    values: dict[str, Any] = {
        "root": root,
        "collection": "staff",
        "base_url": "http://fake",
        "backoff_base_s": 0.001,
        "progress": "none",
    }
    values.update(overrides)
    return EnrollOptions(**values)


def _run(options: EnrollOptions, transport: httpx.BaseTransport) -> Any:
    return enroll(options, transport=transport)


@pytest.fixture
def small_tree(tmp_path: Path, lfw_image: LfwImage) -> Path:
    """Two LFW people, a text file named .jpg, a README, and a loose file at the top."""
    root = tmp_path / "people"
    for person, count in (("George_W_Bush", 2), ("Colin_Powell", 1)):
        (root / person).mkdir(parents=True)
        for n in range(1, count + 1):
            shutil.copy(lfw_image(person, n), root / person)
    (root / "Colin_Powell" / "broken.jpg").write_text("this is not a JPEG")
    (root / "Colin_Powell" / "README.txt").write_text("notes")
    (root / "index.csv").write_text("name\n")
    return root


def test_enrolls_each_file_and_reports_rejections_without_failing(small_tree: Path, tmp_path: Path) -> None:
    fake = FakeApi()
    report_path = tmp_path / "out" / "report.json"
    argv = [
        str(small_tree),
        "--collection",
        "staff",
        "--base-url",
        "http://fake",
        "--no-progress",
        "--report",
        str(report_path),
    ]

    code = main(argv, transport=fake.transport())

    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["counts"] == {"enrolled": 3, "skipped": 0, "rejected": 1, "failed": 0, "ignored": 2}
    assert [Path(r["path"]).name for r in report["rejected"]] == ["broken.jpg"]
    assert report["rejected"][0]["code"] == "unsupported_media_type"
    assert {Path(r["path"]).name for r in report["ignored"]} == {"README.txt", "index.csv"}
    # The server got each file's sha256, which is what makes a re-run resumable.
    stored = {f["source_hash"] for f in fake.faces[("staff", "George_W_Bush")]}
    expected = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (small_tree / "George_W_Bush").iterdir()}
    assert stored == expected
    assert fake.collections == {"staff"}


def test_rerun_skips_files_already_enrolled_and_uploads_only_new_ones(
    small_tree: Path, lfw_image: LfwImage
) -> None:
    fake = FakeApi()
    transport = fake.transport()
    first = _run(_options(small_tree), transport)
    assert first.counts()["enrolled"] == 3

    shutil.copy(lfw_image("Colin_Powell", 2), small_tree / "Colin_Powell")
    uploads_before = sum(n for k, n in fake.calls.items() if k.startswith("POST") and k.endswith("/faces"))
    second = _run(_options(small_tree), transport)

    assert second.counts()["enrolled"] == 1
    assert second.enrolled[0].path.endswith("Colin_Powell_0002.jpg")
    assert second.counts()["skipped"] == 3
    assert {o.code for o in second.skipped} == {"already_enrolled"}
    uploads = sum(n for k, n in fake.calls.items() if k.startswith("POST") and k.endswith("/faces"))
    # The new image and the rejected file (rejections are re-judged), nothing already enrolled.
    assert uploads - uploads_before == 2
    assert len(fake.faces[("staff", "Colin_Powell")]) == 2


def test_identical_files_in_one_subject_are_uploaded_once(tmp_path: Path, lfw_image: LfwImage) -> None:
    root = tmp_path / "people"
    (root / "Colin_Powell").mkdir(parents=True)
    shutil.copy(lfw_image("Colin_Powell", 1), root / "Colin_Powell" / "a.jpg")
    shutil.copy(lfw_image("Colin_Powell", 1), root / "Colin_Powell" / "b.jpg")
    fake = FakeApi()

    report = _run(_options(root, concurrency=1), fake.transport())

    assert report.counts()["enrolled"] == 1
    assert [o.code for o in report.skipped] == ["duplicate_in_run"]
    assert len(fake.faces[("staff", "Colin_Powell")]) == 1


def test_retries_503_with_backoff_then_succeeds(tmp_path: Path, lfw_image: LfwImage) -> None:
    root = tmp_path / "people"
    (root / "Colin_Powell").mkdir(parents=True)
    shutil.copy(lfw_image("Colin_Powell", 1), root / "Colin_Powell")
    fake = FakeApi(upload_failures=[503, 503])

    report = _run(_options(root), fake.transport())

    assert report.ok
    assert report.counts()["enrolled"] == 1
    assert report.enrolled[0].attempts == 3
    assert fake.calls["POST /v1/collections/staff/subjects/Colin_Powell/faces"] == 3
    assert len(fake.faces[("staff", "Colin_Powell")]) == 1


def test_gives_up_after_the_retry_budget_and_exits_1(tmp_path: Path, lfw_image: LfwImage) -> None:
    root = tmp_path / "people"
    (root / "Colin_Powell").mkdir(parents=True)
    shutil.copy(lfw_image("Colin_Powell", 1), root / "Colin_Powell")
    fake = FakeApi(upload_failures=[500] * 10)
    argv = [
        str(root),
        "--collection",
        "staff",
        "--base-url",
        "http://fake",
        "--no-progress",
        "--retries",
        "2",
        "--report",
        str(tmp_path / "r.json"),
    ]

    code = main(argv, transport=fake.transport())

    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 1
    assert report["counts"]["failed"] == 1
    assert report["failed"][0]["code"] == "http_500"
    assert report["failed"][0]["attempts"] == 3
    assert fake.calls["POST /v1/collections/staff/subjects/Colin_Powell/faces"] == 3


def test_client_errors_are_never_retried(tmp_path: Path, lfw_image: LfwImage) -> None:
    root = tmp_path / "people"
    (root / "Colin_Powell").mkdir(parents=True)
    shutil.copy(lfw_image("Colin_Powell", 1), root / "Colin_Powell")
    fake = FakeApi(upload_failures=[400])

    report = _run(_options(root), fake.transport())

    assert not report.ok
    assert [(o.code, o.attempts) for o in report.failed] == [("http_400", 1)]
    assert fake.calls["POST /v1/collections/staff/subjects/Colin_Powell/faces"] == 1


def test_connection_errors_are_retried(tmp_path: Path, lfw_image: LfwImage) -> None:
    root = tmp_path / "people"
    (root / "Colin_Powell").mkdir(parents=True)
    shutil.copy(lfw_image("Colin_Powell", 1), root / "Colin_Powell")
    fake = FakeApi()
    transport = FlakyTransport(fake.transport(), "/faces", 2, after_send=False)

    report = _run(_options(root), transport)

    assert report.counts()["enrolled"] == 1
    assert len(fake.faces[("staff", "Colin_Powell")]) == 1


def test_a_lost_reply_does_not_enroll_the_file_twice(tmp_path: Path, lfw_image: LfwImage) -> None:
    root = tmp_path / "people"
    (root / "Colin_Powell").mkdir(parents=True)
    shutil.copy(lfw_image("Colin_Powell", 1), root / "Colin_Powell")
    fake = FakeApi()
    fake.collections.add("staff")
    fake.faces[("staff", "Colin_Powell")] = []
    # Only the upload (POST) loses its reply; the listing used to check is a GET.
    transport = FlakyTransport(
        fake.transport(),
        "POST /v1/collections/staff/subjects/Colin_Powell/faces",
        1,
        after_send=True,
    )

    report = _run(_options(root), transport)

    assert report.counts()["enrolled"] == 1
    assert len(fake.faces[("staff", "Colin_Powell")]) == 1
    assert report.enrolled[0].face_id == fake.faces[("staff", "Colin_Powell")][0]["face_id"]
    assert report.enrolled[0].attempts == 1  # the one upload that landed; its lost reply was not re-sent


def test_a_missing_or_wrong_api_key_stops_the_run_before_uploading(small_tree: Path) -> None:
    fake = FakeApi(api_key="s3cret")
    transport = fake.transport()

    refused = _run(_options(small_tree, api_key="wrong"), transport)
    accepted = _run(_options(small_tree, api_key="s3cret"), transport)

    assert refused.fatal_error is not None
    assert "unauthorized" in refused.fatal_error
    assert not refused.ok
    assert refused.counts()["enrolled"] == 0
    assert accepted.ok
    assert accepted.counts()["enrolled"] == 3


def test_unreadable_files_are_reported_and_the_rest_enrolled(tmp_path: Path, lfw_image: LfwImage) -> None:
    root = tmp_path / "people"
    (root / "Colin_Powell").mkdir(parents=True)
    shutil.copy(lfw_image("Colin_Powell", 1), root / "Colin_Powell")
    (root / "Colin_Powell" / "gone.jpg").symlink_to(tmp_path / "does-not-exist.jpg")

    report = _run(_options(root), FakeApi().transport())

    assert report.counts()["enrolled"] == 1
    assert [(Path(o.path).name, o.code) for o in report.failed] == [("gone.jpg", "unreadable_file")]


def test_base_url_and_api_key_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACES_BASE_URL", "http://faces.internal:9000")
    monkeypatch.setenv("FACES_API_KEY", "from-env")

    args = build_parser().parse_args(["root", "--collection", "c"])

    assert (args.base_url, args.api_key) == ("http://faces.internal:9000", "from-env")


def test_backoff_grows_exponentially_and_is_capped() -> None:
    delays = [[backoff_delay(attempt, 0.5) for _ in range(200)] for attempt in range(8)]
    assert all(0.0 <= d <= 0.5 * 2**attempt for attempt, ds in enumerate(delays) for d in ds)
    assert max(delays[7]) <= 30.0
    assert max(delays[4]) > max(delays[0])  # jittered, but the ceiling doubles
    assert backoff_delay(0, 0.5, retry_after_s=3.0) >= 3.0


def test_a_subject_whose_files_are_all_rejected_is_not_left_behind_empty(tmp_path: Path) -> None:
    fake = FakeApi(collections={"staff"})
    fake.faces[("staff", "Existing")] = []  # created before the run: never deleted by it
    root = tmp_path / "people"
    for subject in ("Nobody", "Existing"):
        (root / subject).mkdir(parents=True)
        (root / subject / "notes.jpg").write_text("not an image")

    report = _run(_options(root), fake.transport())

    assert report.ok
    assert report.counts()["rejected"] == 2
    assert ("staff", "Nobody") not in fake.faces
    assert ("staff", "Existing") in fake.faces
    assert report.removed_subjects == ["Nobody"]
    assert report.to_json()["removed_empty_subjects"] == ["Nobody"]
    # The collection existed before the run: it stays, although nothing was enrolled into it.
    assert fake.collections == {"staff"}
    assert report.removed_collection is None


def test_a_collection_the_run_created_is_removed_when_every_image_is_rejected(tmp_path: Path) -> None:
    fake = FakeApi()
    root = tmp_path / "people"
    (root / "Nobody").mkdir(parents=True)
    (root / "Nobody" / "notes.jpg").write_text("not an image")

    report = _run(_options(root), fake.transport())

    assert report.ok
    assert report.counts()["rejected"] == 1
    assert fake.calls["POST /v1/collections"] == 1  # the run did create it...
    assert fake.collections == set()  # ...and did not leave it behind empty
    assert fake.faces == {}
    assert report.removed_collection == "staff"
    assert report.to_json()["removed_empty_collection"] == "staff"
    assert "collection 'staff' not kept" in report.summary()


def test_a_collection_the_run_created_is_kept_once_one_image_is_enrolled(
    small_tree: Path,
) -> None:
    fake = FakeApi()

    report = _run(_options(small_tree), fake.transport())

    assert report.counts()["enrolled"] == 3
    assert fake.collections == {"staff"}
    assert report.removed_collection is None


def test_every_upload_carries_an_idempotency_key_stable_per_file_and_target(
    tmp_path: Path, lfw_image: LfwImage
) -> None:
    root = tmp_path / "people"
    (root / "Colin_Powell").mkdir(parents=True)
    shutil.copy(lfw_image("Colin_Powell", 1), root / "Colin_Powell")
    shutil.copy(lfw_image("Colin_Powell", 2), root / "Colin_Powell")
    (root / "Colin_Powell" / "broken.jpg").write_text("this is not a JPEG")
    fake = FakeApi(upload_failures=[503, 503])
    transport = fake.transport()

    first = _run(_options(root, concurrency=1), transport)
    keys_first = list(fake.upload_keys)
    fake.upload_keys.clear()
    second = _run(_options(root, concurrency=1), transport)  # re-run: only the rejected file goes again
    other = _run(_options(root, concurrency=1, collection="elsewhere"), transport)

    assert first.counts()["enrolled"] == 2
    assert second.counts()["skipped"] == 2
    assert other.counts()["enrolled"] == 2
    by_file: dict[str, set[str | None]] = {}
    for filename, key in keys_first:
        by_file.setdefault(filename, set()).add(key)
    # Two 503s and their retries: one key per file, the same on every attempt, and a different one per file.
    assert len(keys_first) == 3 + 2
    assert all(len(keys) == 1 and None not in keys for keys in by_file.values())
    assert len({next(iter(keys)) for keys in by_file.values()}) == 3
    # The re-run sends the same key for the same file into the same collection; another collection, another.
    rerun = dict(fake.upload_keys[:1])
    assert rerun == {"broken.jpg": next(iter(by_file["broken.jpg"]))}
    elsewhere = dict(fake.upload_keys[1:])
    assert set(elsewhere) == {"broken.jpg", "Colin_Powell_0001.jpg", "Colin_Powell_0002.jpg"}
    assert not set(elsewhere.values()) & {next(iter(k)) for k in by_file.values()}


class CountingTransport(httpx.BaseTransport):
    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.requests = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return self.inner.handle_request(request)


def test_a_server_that_is_not_running_fails_fast_with_a_clear_message(
    small_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    transport = CountingTransport(httpx.HTTPTransport())
    argv = [str(small_tree), "--collection", "staff", "--base-url", url, "--report", str(tmp_path / "r.json")]

    code = main(argv, transport=transport)

    out = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 1
    assert transport.requests == 1  # one refused connection, no retries with backoff
    assert f"is the server running at {url}? start it with `faces serve`" in report["fatal_error"]
    assert f"is the server running at {url}?" in out
    assert "ConnectError" not in out
    assert report["counts"]["enrolled"] == 0


def test_progress_on_a_redirected_stream_is_a_few_plain_lines(
    small_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeApi()
    report_path = str(tmp_path / "r.json")
    argv = [str(small_tree), "--collection", "staff", "--base-url", "http://fake", "--report", report_path]

    assert main(argv, transport=fake.transport()) == 0

    err = capsys.readouterr().err  # pytest's capture is not a terminal, as a redirected stderr
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("enroll:")]
    assert lines == [lines[-1]]  # a short run: just the final line
    assert lines[-1].startswith("enroll: 4/4 files (enrolled 3, skipped 0, rejected 1, failed 0")


def test_line_progress_writes_once_per_interval_not_per_file() -> None:
    now = [0.0]
    stream = io.StringIO()
    progress = LineProgress(100, stream, interval_s=10.0, clock=lambda: now[0])

    for i in range(100):
        now[0] = i * 0.35  # 100 files over ~35 s
        progress.update({"enrolled": i + 1})
    progress.close()

    lines = stream.getvalue().splitlines()
    assert len(lines) == 4  # at 10, 20 and 30 s, and the final one
    assert lines[-1].startswith("enroll: 100/100 files (enrolled 100) in 35 s")
    assert "left" in lines[0]
    assert "left" not in lines[-1]


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise() -> None:
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        try:
            assert isinstance(make_progress("auto", 10, terminal, 10.0), BarProgress)
        finally:
            os.close(leader)
    assert isinstance(make_progress("auto", 10, io.StringIO(), 10.0), LineProgress)
    assert isinstance(make_progress("bar", 10, io.StringIO(), 10.0), BarProgress)
    assert isinstance(make_progress("none", 10, io.StringIO(), 10.0), NoProgress)


# ---------------------------------------------------------------- against the real server


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`faces serve` in a subprocess on a free port, with its own SQLite store and index dir."""
    env = {"FACES_EXECUTION_PROVIDER": "cpu", "FACES_USE_GPU_INDEX": "false"}
    with running_server(tmp_path_factory.mktemp("server"), env=env) as server:
        yield server.url


@pytest.mark.slow
def test_enrolls_lfw_people_against_the_real_server_and_resumes(
    live_server: str, tmp_path: Path, lfw_image: LfwImage
) -> None:
    root = tmp_path / "people"
    for person, count in PEOPLE.items():
        (root / person).mkdir(parents=True)
        for n in range(1, count + 1):
            shutil.copy(lfw_image(person, n), root / person)
    (root / "Colin_Powell" / "not_really.jpg").write_text("plain text pretending to be a JPEG")
    Image.new("RGB", (160, 160), (40, 120, 200)).save(root / "Serena_Williams" / "solid_blue.png")
    photos = sum(PEOPLE.values())
    argv = [
        str(root),
        "--collection",
        "lfw-e2e",
        "--base-url",
        live_server,
        "--concurrency",
        "3",
        "--no-progress",
        "--report",
        str(tmp_path / "first.json"),
    ]

    first_code = main(argv)
    first = json.loads((tmp_path / "first.json").read_text())

    assert first_code == 0, first
    rejected = {Path(r["path"]).name: r["code"] for r in first["rejected"]}
    assert rejected["not_really.jpg"] == "unsupported_media_type"
    assert rejected["solid_blue.png"] == "no_face"
    # Every real photo either enrolled or was rejected with a reason, and most of them enrolled.
    counts = first["counts"]
    assert counts["enrolled"] + counts["rejected"] == photos + 2
    assert counts["enrolled"] >= photos - 2
    assert counts["failed"] == 0
    # The server holds exactly what the report says was enrolled, under the right subjects.
    with httpx.Client(base_url=live_server) as client:
        for person in PEOPLE:
            listed = client.get(f"/v1/collections/lfw-e2e/subjects/{person}/faces").json()["faces"]
            reported = {r["face_id"] for r in first["enrolled"] if r["subject_id"] == person}
            assert {f["face_id"] for f in listed} == reported
            assert {f["source_hash"] for f in listed} == {
                r["sha256"] for r in first["enrolled"] if r["subject_id"] == person
            }

    argv[-1] = str(tmp_path / "second.json")
    second_code = main(argv)
    second = json.loads((tmp_path / "second.json").read_text())

    assert second_code == 0
    assert second["counts"]["enrolled"] == 0
    assert second["counts"]["skipped"] == counts["enrolled"]
    assert {r["path"] for r in second["skipped"]} == {r["path"] for r in first["enrolled"]}
    assert second["counts"]["rejected"] == counts["rejected"]


@pytest.mark.slow
def test_faces_enroll_console_command_dispatches_to_the_client(
    live_server: str, tmp_path: Path, lfw_image: LfwImage
) -> None:
    root = tmp_path / "people"
    (root / "Colin_Powell").mkdir(parents=True)
    shutil.copy(lfw_image("Colin_Powell", 1), root / "Colin_Powell")
    env = {**os.environ, "FACES_BASE_URL": live_server}

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "enroll",
            str(root),
            "--collection",
            "cli",
            "--no-progress",
            "--report",
            str(tmp_path / "r.json"),
        ],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "enrolled 1" in result.stdout
    assert json.loads((tmp_path / "r.json").read_text())["counts"]["enrolled"] == 1


@pytest.mark.slow
def test_face_selection_reaches_the_server(live_server: str, tmp_path: Path, lfw_image: LfwImage) -> None:
    """Two people side by side: strict rejects the photo, largest enrolls one face from it."""
    left = Image.open(lfw_image("Colin_Powell", 1)).convert("RGB")
    right = Image.open(lfw_image("George_W_Bush", 1)).convert("RGB")
    pair = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    pair.paste(left, (0, 0))
    pair.paste(right, (left.width, 0))
    root = tmp_path / "people"
    (root / "Colin_Powell").mkdir(parents=True)
    pair.save(root / "Colin_Powell" / "with_bush.jpg", quality=95)

    strict = main(
        [
            str(root),
            "--collection",
            "pairs",
            "--base-url",
            live_server,
            "--no-progress",
            "--report",
            str(tmp_path / "strict.json"),
        ]
    )
    largest = main(
        [
            str(root),
            "--collection",
            "pairs",
            "--base-url",
            live_server,
            "--no-progress",
            "--face-selection",
            "largest",
            "--report",
            str(tmp_path / "largest.json"),
        ]
    )

    assert (strict, largest) == (0, 0)
    strict_report = json.loads((tmp_path / "strict.json").read_text())
    largest_report = json.loads((tmp_path / "largest.json").read_text())
    assert [r["code"] for r in strict_report["rejected"]] == ["multiple_faces"]
    assert largest_report["counts"]["enrolled"] == 1


@pytest.mark.slow
def test_no_empty_subject_when_every_real_image_is_rejected(
    live_server: str, tmp_path: Path, lfw_image: LfwImage
) -> None:
    """A folder of unusable files creates no subject; a folder beside it still enrolls."""
    root = tmp_path / "people"
    (root / "Nobody").mkdir(parents=True)
    Image.new("RGB", (160, 160), (40, 120, 200)).save(root / "Nobody" / "solid_blue.png")
    (root / "Nobody" / "text.jpg").write_text("plain text pretending to be a JPEG")
    (root / "Colin_Powell").mkdir()
    shutil.copy(lfw_image("Colin_Powell", 1), root / "Colin_Powell")
    argv = [str(root), "--collection", "rejects", "--base-url", live_server, "--no-progress"]

    code = main([*argv, "--report", str(tmp_path / "r.json")])

    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0, report
    assert report["counts"]["enrolled"] == 1
    assert report["counts"]["rejected"] == 2
    assert report["removed_empty_subjects"] == ["Nobody"]
    with httpx.Client(base_url=live_server) as client:
        assert client.get("/v1/collections/rejects/subjects/Nobody").status_code == 404
        listed = client.get("/v1/collections/rejects/subjects").json()
        assert [s["subject_id"] for s in listed["items"]] == ["Colin_Powell"]


@pytest.mark.slow
def test_a_collection_created_for_nothing_is_removed_on_the_real_server(
    live_server: str, tmp_path: Path
) -> None:
    root = tmp_path / "people"
    (root / "Nobody").mkdir(parents=True)
    Image.new("RGB", (160, 160), (40, 120, 200)).save(root / "Nobody" / "solid_blue.png")
    argv = [str(root), "--collection", "nothing-kept", "--base-url", live_server, "--no-progress"]

    code = main([*argv, "--report", str(tmp_path / "r.json")])

    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 0, report
    assert [r["code"] for r in report["rejected"]] == ["no_face"]
    assert report["removed_empty_subjects"] == ["Nobody"]
    assert report["removed_empty_collection"] == "nothing-kept"
    with httpx.Client(base_url=live_server) as client:
        assert client.get("/v1/collections/nothing-kept").status_code == 404

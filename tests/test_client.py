"""faces_client.FacesClient: the whole /v1 API against a real `faces serve` on LFW photos, its problem
families, its retry rules (what may be repeated, Retry-After), and the README's client example."""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from faces_client import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    FacesClient,
    ImageRejectedError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitedError,
    RetryPolicy,
    ServerError,
    ServerUnreachableError,
    ServiceUnavailableError,
    TransportError,
    ValidationError,
)
from service.testing.server import REPO_ROOT, free_port, running_server

LfwImage = Callable[[str, int], Path]
FAST = RetryPolicy(retries=3, backoff_base_s=0.001)


def _problem(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {
        "type": f"urn:faces:problem:{code}",
        "title": code,
        "status": status,
        "detail": f"d-{code}",
        "code": code,
    }
    return httpx.Response(
        status, json=body, headers={"content-type": "application/problem+json", **(headers or {})}
    )


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's backoff sleeps, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


def _scripted(answers: list[httpx.Response | Exception]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle), seen


# ---------------------------------------------------------------- retry rules and problem families


def test_a_get_is_retried_on_503_after_the_servers_retry_after(sleeps: list[float]) -> None:
    health = httpx.Response(200, json={"status": "ok", "checks": {}})
    transport, seen = _scripted([_problem(503, "server_busy", {"Retry-After": "2"}), health])

    with FacesClient("http://faces", retry=FAST, transport=transport) as faces:
        assert faces.healthz().status == "ok"

    assert len(seen) == 2
    assert sleeps == [pytest.approx(2.0)]  # the backoff alone would be ~1 ms: Retry-After is the floor


def test_a_post_without_idempotency_key_is_never_repeated(sleeps: list[float]) -> None:
    transport, seen = _scripted([_problem(503, "index_unavailable", {"Retry-After": "3"})])

    with (
        FacesClient("http://faces", retry=FAST, transport=transport) as faces,
        pytest.raises(ServiceUnavailableError) as raised,
    ):
        faces.create_collection("staff")

    assert len(seen) == 1
    assert sleeps == []
    assert (raised.value.status, raised.value.code, raised.value.retry_after_s) == (
        503,
        "index_unavailable",
        3.0,
    )


def test_a_post_with_idempotency_key_is_repeated_with_the_same_key(sleeps: list[float]) -> None:
    created = {
        "name": "staff",
        "description": "",
        "created_at": "2026-01-01T00:00:00Z",
        "subject_count": 0,
        "face_count": 0,
        "identify_threshold": {"value": 1.04, "source": "model_card", "set_at": None},
        "verify_threshold": {"value": 1.4, "source": "model_card", "set_at": None},
    }
    transport, seen = _scripted(
        [_problem(503, "not_ready"), httpx.ReadError("reset"), httpx.Response(201, json=created)]
    )

    with FacesClient("http://faces", retry=FAST, transport=transport) as faces:
        collection = faces.create_collection("staff", idempotency_key="k-1")

    assert collection.identify_threshold.value == 1.04
    assert [r.headers["idempotency-key"] for r in seen] == ["k-1", "k-1", "k-1"]
    assert len(sleeps) == 2


def test_the_retry_budget_ends_with_the_last_problem(sleeps: list[float]) -> None:
    transport, seen = _scripted([_problem(502, "bad_gateway")] * 4)

    with (
        FacesClient("http://faces", retry=FAST, transport=transport) as faces,
        pytest.raises(ServerError) as raised,
    ):
        faces.get_collection("staff")

    assert len(seen) == 4  # one try and three retries
    assert raised.value.attempts == 4


def test_a_server_never_reached_is_reported_at_once_with_a_hint(sleeps: list[float]) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    with FacesClient(url, retry=FAST) as faces, pytest.raises(ServerUnreachableError) as raised:
        faces.list_collections()

    assert raised.value.attempts == 1
    assert sleeps == []
    assert f"is the server running at {url}? start it with `faces serve`" in str(raised.value)


def test_a_refused_connection_after_the_server_answered_is_retried(sleeps: list[float]) -> None:
    listing = httpx.Response(200, json={"collections": []})
    transport, seen = _scripted(
        [listing, httpx.ConnectError("refused"), httpx.ConnectError("refused"), listing]
    )

    with FacesClient("http://faces", retry=FAST, transport=transport) as faces:
        assert faces.list_collections() == []
        assert faces.list_collections() == []  # a restart: nothing was sent, so any method may be repeated

    assert len(seen) == 4
    assert len(sleeps) == 2


def test_transport_errors_after_sending_are_not_repeated_for_a_plain_post(sleeps: list[float]) -> None:
    transport, seen = _scripted([httpx.Response(200, json={"collections": []}), httpx.ReadError("reset")])

    with FacesClient("http://faces", retry=FAST, transport=transport) as faces:
        faces.list_collections()
        with pytest.raises(TransportError):
            faces.verify(b"\xff\xd8\xff a", b"\xff\xd8\xff b")

    assert len(seen) == 2


@pytest.mark.parametrize(
    ("status", "code", "family"),
    [
        (400, "invalid_request", BadRequestError),
        (401, "unauthorized", AuthenticationError),
        (403, "forbidden", PermissionDeniedError),
        (404, "subject_not_found", NotFoundError),
        (409, "collection_exists", ConflictError),
        (413, "request_too_many_pixels", PayloadTooLargeError),
        (415, "unsupported_media_type", ImageRejectedError),
        (422, "no_face", ImageRejectedError),
        (422, "no_image_enrolled", ImageRejectedError),
        (422, "validation_error", ValidationError),
        (422, "calibration_not_possible", ValidationError),
        (429, "calibration_busy", RateLimitedError),
        (503, "server_busy", ServiceUnavailableError),
        (500, "internal_error", ServerError),
    ],
)
def test_each_problem_maps_to_its_family(status: int, code: str, family: type[ApiError]) -> None:
    transport, _ = _scripted([_problem(status, code)] * 8)

    with (
        FacesClient("http://faces", retry=RetryPolicy(retries=0), transport=transport) as faces,
        pytest.raises(family) as raised,
    ):
        faces.get_subject("staff", "alice")

    assert (raised.value.status, raised.value.code, raised.value.detail) == (status, code, f"d-{code}")
    assert isinstance(raised.value, ApiError)


# ---------------------------------------------------------------- against the real server


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = {"FACES_EXECUTION_PROVIDER": "cpu", "FACES_USE_GPU_INDEX": "false"}
    with running_server(tmp_path_factory.mktemp("client-server"), env=env) as server:
        yield server.url


@pytest.fixture
def faces(server_url: str) -> Iterator[FacesClient]:
    with FacesClient(server_url) as client:
        yield client


@pytest.mark.slow
def test_the_whole_api_on_lfw_photos(faces: FacesClient, lfw_image: LfwImage) -> None:
    assert faces.healthz().status == "ok"
    assert faces.readyz().ready

    created = faces.create_collection("office", description="front desk")
    assert (created.name, created.description, created.face_count) == ("office", "front desk", 0)
    with pytest.raises(ConflictError) as exists:
        faces.create_collection("office")
    assert exists.value.code == "collection_exists"

    patched = faces.update_collection("office", identify_threshold=0.95)
    assert (patched.identify_threshold.value, patched.identify_threshold.source) == (0.95, "collection")
    assert patched.description == "front desk"  # PATCH leaves what is not given
    reset = faces.update_collection("office", reset_identify_threshold=True)
    assert reset.identify_threshold.source != "collection"
    assert reset.identify_threshold.source == "model_card_by_size"  # the card's ladder, read at 0 people
    assert (reset.identify_threshold.read_at_subjects, reset.identify_threshold.read_at_faces) == (0, 0)

    people = {"Colin_Powell": (1, 2), "Serena_Williams": (1, 2), "George_W_Bush": (1, 2)}
    face_ids: dict[str, list[str]] = {}
    for person, numbers in people.items():
        enrolled = faces.enroll(
            "office", person, [lfw_image(person, n) for n in numbers], create_subject=True, source_hashes=None
        )
        assert (enrolled.enrolled, enrolled.rejected) == (2, 0)
        assert [r.filename for r in enrolled.results] == [f"{person}_{n:04d}.jpg" for n in numbers]
        face_ids[person] = [str(r.face_id) for r in enrolled.results]
    assert faces.get_collection("office").face_count == 6

    # Pagination as an iterator: one subject per page, all three, in order.
    assert [s.subject_id for s in faces.iter_subjects("office", page_size=1)] == sorted(people)
    assert faces.list_subjects("office", limit=2).total == 3
    assert [s.subject_id for s in faces.iter_subjects("office", id_prefix="se")] == ["Serena_Williams"]

    subject = faces.update_subject("office", "Colin_Powell", name="Colin Powell", metadata={"badge": 7})
    assert (subject.name, dict(subject.metadata), subject.face_count) == ("Colin Powell", {"badge": 7}, 2)
    listed = faces.list_faces("office", "Colin_Powell")
    assert {f.face_id for f in listed} == set(face_ids["Colin_Powell"])
    face = faces.get_face("office", face_ids["Colin_Powell"][0])
    assert face.subject_id == "Colin_Powell"
    assert face.box is not None
    assert faces.thumbnail("office", face.face_id)[:3] == b"\xff\xd8\xff"

    found = faces.identify("office", lfw_image("Colin_Powell", 3), top_k=2)
    best = next(f for f in found.faces if f.match is not None)
    assert best.match is not None
    assert best.match.subject_id == "Colin_Powell"
    assert 0.0 <= best.match.distance < found.threshold
    assert len(best.candidates) == 2
    stranger = faces.identify("office", lfw_image("Tony_Blair", 2))
    assert [f.match for f in stranger.faces] == [None]

    same = faces.verify(lfw_image("Serena_Williams", 3), lfw_image("Serena_Williams", 4))
    other = faces.verify(lfw_image("Serena_Williams", 3), lfw_image("Colin_Powell", 3))
    assert same.match
    assert not other.match
    assert same.distance < other.distance
    against = faces.verify_subject("office", "Colin_Powell", lfw_image("Colin_Powell", 4))
    assert against.match
    assert against.face_id in face_ids["Colin_Powell"]

    calibration = faces.calibrate("office", target_fpir=0.1)
    assert (calibration.collection, calibration.subjects, calibration.faces) == ("office", 3, 6)
    assert not calibration.applied
    assert calibration.warnings  # six faces are too few for a trustworthy estimate, and it says so

    faces.delete_face("office", face_ids["George_W_Bush"][0])
    assert len(faces.list_faces("office", "George_W_Bush")) == 1
    faces.delete_subject("office", "George_W_Bush")
    with pytest.raises(NotFoundError) as gone:
        faces.get_subject("office", "George_W_Bush")
    assert gone.value.code == "subject_not_found"
    faces.delete_collection("office")
    with pytest.raises(NotFoundError) as no_collection:
        faces.get_collection("office")
    assert no_collection.value.code == "collection_not_found"


@pytest.mark.slow
def test_refused_images_carry_the_servers_per_image_results(
    faces: FacesClient, lfw_image: LfwImage, tmp_path: Path
) -> None:
    faces.create_collection("refusals")
    blue = io.BytesIO()
    Image.new("RGB", (160, 160), (40, 120, 200)).save(blue, format="PNG")

    with pytest.raises(ImageRejectedError) as no_face:
        faces.enroll("refusals", "Nobody", [("blue.png", blue.getvalue())], create_subject=True)
    with pytest.raises(ImageRejectedError) as mixed:
        faces.enroll(
            "refusals",
            "Nobody",
            [("blue.png", blue.getvalue()), ("notes.jpg", b"plain text")],
            create_subject=True,
        )
    with pytest.raises(ValidationError) as bad_threshold:
        faces.update_collection("refusals", identify_threshold=7.5)
    with pytest.raises(NotFoundError) as no_subject:
        faces.enroll("refusals", "Nobody", [lfw_image("Colin_Powell", 1)])

    assert (no_face.value.status, no_face.value.code) == (422, "no_face")
    assert [(r.filename, r.status) for r in no_face.value.results or ()] == [("blue.png", "rejected")]
    assert mixed.value.code == "no_image_enrolled"
    reasons = {r.filename: r.error.code for r in mixed.value.results or () if r.error}
    assert reasons == {"blue.png": "no_face", "notes.jpg": "unsupported_media_type"}
    assert bad_threshold.value.code == "validation_error"
    assert bad_threshold.value.errors
    assert no_subject.value.code == "subject_not_found"
    assert faces.get_collection("refusals").subject_count == 0  # nothing half-stored


@pytest.mark.slow
def test_the_readme_client_example_runs_as_written(server_url: str, lfw_root: Path) -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python client", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None, "the README's Python client section has a python block"
    source = code.group(1)
    assert "http://127.0.0.1:8000" in source
    assert "../shared/data/lfw" in source
    source = source.replace("http://127.0.0.1:8000", server_url).replace("../shared/data/lfw", str(lfw_root))
    out = io.StringIO()

    with contextlib.redirect_stdout(out):
        exec(compile(source, "README.md", "exec"), {})

    printed = out.getvalue().split()
    assert printed[0] == "Colin_Powell"
    assert 0.0 <= float(printed[1]) < 1.0
    with FacesClient(server_url) as faces:
        assert json.dumps(sorted(s.subject_id for s in faces.iter_subjects("demo"))) == '["Colin_Powell"]'


# ---------------------------------------------------------------- installable alone


def test_the_client_package_imports_nothing_beyond_httpx_and_tqdm() -> None:
    """`pip install ./client` brings httpx and tqdm only: no module of it may need more."""
    import ast
    import sys
    import tomllib

    package = REPO_ROOT / "client" / "faces_client"
    imported: set[str] = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"__future__", "faces_client"}
    declared = tomllib.loads((REPO_ROOT / "client" / "pyproject.toml").read_text(encoding="utf-8"))
    requirements = {re.split(r"[<>=\[ ]", r)[0] for r in declared["project"]["dependencies"]}

    assert third_party == {"httpx", "tqdm"}
    assert requirements == {"httpx", "tqdm"}

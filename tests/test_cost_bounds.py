"""Cost per request is bounded: pixel budget, a large-image lane that others never queue behind,
and large photos decoded at reduced size without changing who is in them (issue 12, finding 3)."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.bootstrap import large_image_spec, load_face_models
from service.domain.faces import FaceEngine
from service.errors import ServerBusy
from service.main import create_app
from service.runtime import lanes as lanes_module
from service.runtime.analyzer import AnalyzedFace, FaceAnalyzer
from service.runtime.batcher import EmbeddingBatcher
from service.runtime.embedder import OnnxEmbedder
from service.runtime.imaging import decode_at_least, decode_image
from service.runtime.lanes import ImageLanes
from service.settings import Settings
from tests.helpers import enlarged_jpeg, face_in_large_canvas, giant_png, jpeg_bytes, png_bytes

LfwImage = Callable[[str, int], Path]
PROBLEM = "application/problem+json"
MAX_PIXELS = 40_000_000


SETTINGS = Settings(execution_provider="cpu")


@pytest.fixture(scope="module")
def models() -> tuple[OnnxEmbedder, FaceAnalyzer]:
    embedder, _card, analyzer = load_face_models(SETTINGS)
    return embedder, analyzer


@pytest.fixture(scope="module")
def giant() -> bytes:
    return giant_png()


def _embedding(embedder: OnnxEmbedder, face: AnalyzedFace) -> np.ndarray[Any, np.dtype[np.float32]]:
    return embedder.embed(np.ascontiguousarray(face.crop[None]))[0]


# -- decoding at reduced size ------------------------------------------------------------------


def test_large_jpeg_is_decoded_at_reduced_size(lfw_image: LfwImage) -> None:
    data = enlarged_jpeg(lfw_image("Colin_Powell", 1), 4000)
    decoded = decode_at_least(data, max_pixels=MAX_PIXELS, min_long_side=640)
    # DCT scaling in the decoder: 1/4 keeps the longer side >= 640; no 48 MB full-size array.
    assert decoded.size == (1000, 1000)
    assert decoded.full_size == (4000, 4000)
    assert decoded.pixels.nbytes == 1000 * 1000 * 3


def test_giant_png_reaches_numpy_reduced(giant: bytes) -> None:
    decoded = decode_at_least(giant, max_pixels=MAX_PIXELS, min_long_side=640)
    assert decoded.full_size == (6324, 6324)
    assert max(decoded.size) < 2 * 640
    assert decoded.pixels.nbytes < 2_000_000  # 120 MB at full size


def test_exif_rotation_maps_the_full_size(lfw_image: LfwImage) -> None:
    with Image.open(lfw_image("Colin_Powell", 1)) as img:
        wide = img.convert("RGB").resize((3000, 1500))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    decoded = decode_at_least(jpeg_bytes(wide, exif=exif), max_pixels=MAX_PIXELS, min_long_side=640)
    assert decoded.full_size == (1500, 3000)
    assert decoded.size[1] > decoded.size[0]


def test_lfw_size_images_take_exactly_the_old_path(
    models: tuple[OnnxEmbedder, FaceAnalyzer], lfw_image: LfwImage
) -> None:
    _, analyzer = models
    for person, n in (("Colin_Powell", 1), ("Serena_Williams", 2), ("George_W_Bush", 3)):
        data = lfw_image(person, n).read_bytes()
        old = analyzer.analyze(decode_image(data, max_pixels=MAX_PIXELS))
        new = analyzer.analyze_encoded(data, max_pixels=MAX_PIXELS)
        assert len(new) == len(old) >= 1
        for a, b in zip(old, new, strict=True):
            assert a.face.box == b.face.box
            assert np.array_equal(a.crop, b.crop)


@pytest.mark.parametrize("build", ["enlarged", "small_face_in_large_frame"])
def test_large_photo_keeps_its_identity(
    models: tuple[OnnxEmbedder, FaceAnalyzer], lfw_image: LfwImage, build: str
) -> None:
    """Reduced decoding (and the full-resolution second pass for small faces) keeps the person."""
    embedder, analyzer = models
    source = lfw_image("Colin_Powell", 1)
    if build == "enlarged":
        data = enlarged_jpeg(source, 4000)
    else:
        data = face_in_large_canvas(source, (6000, 4000), 500)
    old = analyzer.analyze(decode_image(data, max_pixels=MAX_PIXELS))
    new = analyzer.analyze_encoded(data, max_pixels=MAX_PIXELS)
    assert len(new) == len(old) == 1
    # Boxes are reported in full-resolution pixels either way.
    np.testing.assert_allclose(new[0].face.box, old[0].face.box, rtol=0.02, atol=8)
    assert new[0].quality.face_size_px == pytest.approx(old[0].quality.face_size_px, rel=0.02)
    e_old, e_new = _embedding(embedder, old[0]), _embedding(embedder, new[0])
    assert float(e_old @ e_new) > 0.95
    # Still Colin Powell: close to another of his photos, far from someone else.
    ref = analyzer.analyze(decode_image(lfw_image("Colin_Powell", 2).read_bytes(), max_pixels=MAX_PIXELS))
    other = analyzer.analyze(
        decode_image(lfw_image("Serena_Williams", 1).read_bytes(), max_pixels=MAX_PIXELS)
    )
    assert 2 - 2 * float(e_new @ _embedding(embedder, ref[0])) < 1.0
    assert 2 - 2 * float(e_new @ _embedding(embedder, other[0])) > 1.4


# -- the large-image lane ----------------------------------------------------------------------


def test_a_photo_never_queues_behind_giant_images(
    models: tuple[OnnxEmbedder, FaceAnalyzer], lfw_image: LfwImage, giant: bytes
) -> None:
    embedder, analyzer = models
    engine = FaceEngine(
        analyzer,
        EmbeddingBatcher(embedder, enabled=False),
        max_image_pixels=MAX_PIXELS,
        lanes=ImageLanes(
            analyzer,
            large_spec=large_image_spec(SETTINGS, analyzer),
            large_image_pixels=16_000_000,
            queue_pixels=4 * 6324 * 6324,
        ),
    )
    photo = lfw_image("Colin_Powell", 1).read_bytes()

    async def scenario() -> tuple[int, int]:
        await engine.start()
        try:
            finished: list[int] = []
            giants = [giant] * 4
            admitted = asyncio.Event()

            async def giant_client() -> None:
                async with engine.admit(giants) as probes:
                    admitted.set()
                    for data, probe in zip(giants, probes, strict=True):
                        await engine.analyze(data, probe=probe)
                        finished.append(1)

            task = asyncio.create_task(giant_client())
            await admitted.wait()
            assert engine.lanes.queued_pixels == 4 * 6324 * 6324
            # The lane is full: another large request is refused at once, with a retry hint.
            with pytest.raises(ServerBusy) as busy:
                async with engine.admit([giant]):
                    pass
            assert int(busy.value.headers()["Retry-After"]) >= 1
            faces = await engine.analyze(photo)
            done_when_photo_came_back = len(finished)
            await task
            return len(faces), done_when_photo_came_back
        finally:
            await engine.stop()

    faces, giants_done = asyncio.run(scenario())
    assert faces == 1
    assert giants_done <= 2  # the photo did not wait for the four giant images


def test_large_image_worker_stops_when_idle_and_restarts(
    models: tuple[OnnxEmbedder, FaceAnalyzer], giant: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's memory goes back to the OS once large images stop coming; the next one restarts it."""
    monkeypatch.setattr(lanes_module, "LARGE_WORKER_IDLE_S", 0.5)
    embedder, analyzer = models
    lanes = ImageLanes(analyzer, large_spec=large_image_spec(SETTINGS, analyzer))
    engine = FaceEngine(
        analyzer,
        EmbeddingBatcher(embedder, enabled=False),
        max_image_pixels=MAX_PIXELS,
        lanes=lanes,
    )
    before = {p.pid for p in multiprocessing.active_children()}

    async def scenario() -> tuple[set[int], set[int], set[int]]:
        await engine.start()
        try:
            assert await engine.analyze(giant) == []
            running = {p.pid for p in multiprocessing.active_children()} - before
            await asyncio.sleep(2.0)
            after_idle = {p.pid for p in multiprocessing.active_children()} - before
            assert await engine.analyze(giant) == []
            restarted = {p.pid for p in multiprocessing.active_children()} - before
            return running, after_idle, restarted
        finally:
            await engine.stop()

    running, after_idle, restarted = asyncio.run(scenario())
    assert running
    assert not (running & after_idle)  # the first worker exited
    assert restarted - running  # a new one served the next large image


# -- over HTTP ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("cost")
    settings = Settings(
        database_url=f"sqlite:///{tmp}/faces.db",
        index_dir=tmp / "index",
        execution_provider="cpu",
        large_image_queue_pixels=3 * 6324 * 6324,
    )
    with TestClient(create_app(settings)) as test_client:
        assert test_client.post("/v1/collections", json={"name": "c"}).status_code == 201
        yield test_client


def _problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


def test_request_pixel_budget(client: TestClient, giant: bytes, lfw_image: LfwImage) -> None:
    """16 giant PNGs (8.6 MB on the wire, 640 Mpx) are refused from their headers, nothing stored."""
    files = [("images", (f"g{i}.png", giant, "image/png")) for i in range(16)]
    started = time.perf_counter()
    response = client.post(
        "/v1/collections/c/subjects/s/faces", params={"create_subject": "true"}, files=files
    )
    elapsed = time.perf_counter() - started
    body = _problem(response, 413, "request_too_many_pixels")
    assert body["pixels"] == 16 * 6324 * 6324
    assert body["limit"] == 200_000_000
    assert elapsed < 5.0  # decoding them would take tens of seconds on this machine
    assert client.get("/v1/collections/c/subjects/s").status_code == 404
    # A normal request right after is served as usual.
    photo = lfw_image("Colin_Powell", 1).read_bytes()
    ok = client.post(
        "/v1/collections/c/subjects/s/faces", params={"create_subject": "true"}, files={"images": photo}
    )
    assert ok.status_code == 201, ok.text


def test_full_large_lane_answers_503_with_retry_after(client: TestClient, giant: bytes) -> None:
    engine: FaceEngine = client.app.state.services.engine  # type: ignore[attr-defined]
    results: dict[str, Any] = {}

    def giant_client() -> None:
        files = [("images", (f"g{i}.png", giant, "image/png")) for i in range(3)]
        results["giant"] = client.post(
            "/v1/collections/c/subjects/g/faces", params={"create_subject": "true"}, files=files
        )

    thread = threading.Thread(target=giant_client)
    thread.start()
    deadline = time.monotonic() + 60
    while engine.lanes.queued_pixels == 0 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    busy = client.post("/v1/collections/c/identify", files={"image": ("g.png", giant, "image/png")})
    thread.join()
    body = _problem(busy, 503, "server_busy")
    assert int(busy.headers["retry-after"]) >= 1
    assert "retry" in body["detail"]
    # The giant request itself was served (no face in flat grey), and the lane is free again.
    _problem(results["giant"], 422, "no_face")
    assert engine.lanes.queued_pixels == 0


def test_small_png_is_not_a_large_image(client: TestClient, lfw_image: LfwImage) -> None:
    with Image.open(lfw_image("Colin_Powell", 1)) as img:
        data = png_bytes(img.convert("RGB"))
    response = client.post("/v1/collections/c/identify", files={"image": ("p.png", data, "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["faces"][0]["match"]["subject_id"] == "s"


def test_broken_giant_image_from_the_worker_is_a_clean_422(client: TestClient, giant: bytes) -> None:
    """A large PNG whose data stops half-way fails in the worker process and comes back as a problem."""
    truncated = giant[: len(giant) // 2]
    response = client.post("/v1/collections/c/identify", files={"image": ("t.png", truncated, "image/png")})
    _problem(response, 422, "invalid_image")

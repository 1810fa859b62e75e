"""Detect → align → embed on real LFW photos, with the shipped YuNet/SFace artifacts."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image

from models.lfw import evaluate_verification, fold_people, read_pairs
from service.runtime.alignment import ARCFACE_TEMPLATE_112, align_face, estimate_similarity, template_for
from service.runtime.analyzer import AnalyzedFace, FaceAnalyzer
from service.runtime.detector import AlignedCropDetector, YuNetDetector, load_detector
from service.runtime.embedder import OnnxEmbedder, load_embedder
from service.runtime.imaging import decode_image
from service.runtime.model_card import ModelCard
from service.runtime.quality import BLURRY, FACE_TOO_SMALL, LOW_DETECTOR_SCORE, QualityConfig, assess_quality
from service.runtime.types import DetectedFace

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "artifacts"
ImagePath = Callable[[str, int], Path]


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    return load_detector(MODEL_DIR / "yunet_2023mar_fp32.onnx", "cpu", 1, score_threshold=0.6, max_side=640)


@pytest.fixture(scope="module")
def embedder_and_card() -> tuple[OnnxEmbedder, ModelCard]:
    return load_embedder(MODEL_DIR, "embedder.json", "cpu", 1)


@pytest.fixture(scope="module")
def embedder(embedder_and_card: tuple[OnnxEmbedder, ModelCard]) -> OnnxEmbedder:
    return embedder_and_card[0]


@pytest.fixture(scope="module")
def card(embedder_and_card: tuple[OnnxEmbedder, ModelCard]) -> ModelCard:
    return embedder_and_card[1]


@pytest.fixture(scope="module")
def analyzer(detector: YuNetDetector, embedder: OnnxEmbedder) -> FaceAnalyzer:
    return FaceAnalyzer(detector, embedder.input_size, QualityConfig())


def load_rgb(path: Path) -> NDArray[np.uint8]:
    return decode_image(path.read_bytes(), max_pixels=40_000_000)


def main_face(analyzer: FaceAnalyzer, image: NDArray[np.uint8]) -> AnalyzedFace:
    faces = analyzer.analyze(image)
    assert faces, "no face found"
    return faces[0]


def embed_one(
    analyzer: FaceAnalyzer, embedder: OnnxEmbedder, image: NDArray[np.uint8]
) -> NDArray[np.float32]:
    return np.asarray(embedder.embed(main_face(analyzer, image).crop[None])[0], dtype=np.float32)


def rgb(array: NDArray[np.generic]) -> NDArray[np.uint8]:
    return np.ascontiguousarray(array, dtype=np.uint8)


def d2(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    return float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).sum())


SAME = [
    (("George_W_Bush", 1), ("George_W_Bush", 2)),
    (("Colin_Powell", 1), ("Colin_Powell", 2)),
    (("Tony_Blair", 1), ("Tony_Blair", 2)),
    (("Serena_Williams", 1), ("Serena_Williams", 2)),
]
DIFFERENT = [
    (("George_W_Bush", 1), ("Colin_Powell", 1)),
    (("Tony_Blair", 1), ("Colin_Powell", 2)),
    (("Serena_Williams", 1), ("Tony_Blair", 2)),
    (("George_W_Bush", 2), ("Serena_Williams", 2)),
]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_same_person_is_closer_than_threshold(
    a: tuple[str, int],
    b: tuple[str, int],
    lfw_image: ImagePath,
    analyzer: FaceAnalyzer,
    embedder: OnnxEmbedder,
    card: ModelCard,
) -> None:
    ea = embed_one(analyzer, embedder, load_rgb(lfw_image(*a)))
    eb = embed_one(analyzer, embedder, load_rgb(lfw_image(*b)))
    assert d2(ea, eb) < card.threshold


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_people_are_farther_than_threshold(
    a: tuple[str, int],
    b: tuple[str, int],
    lfw_image: ImagePath,
    analyzer: FaceAnalyzer,
    embedder: OnnxEmbedder,
    card: ModelCard,
) -> None:
    ea = embed_one(analyzer, embedder, load_rgb(lfw_image(*a)))
    eb = embed_one(analyzer, embedder, load_rgb(lfw_image(*b)))
    assert d2(ea, eb) > card.threshold


def test_group_photo_yields_every_face_largest_first(lfw_image: ImagePath, analyzer: FaceAnalyzer) -> None:
    # Three portraits at different scales side by side, the face centres far apart.
    people = [("Colin_Powell", 1, 1.0), ("George_W_Bush", 1, 0.8), ("Serena_Williams", 1, 0.6)]
    tiles = []
    for person, number, scale in people:
        image = load_rgb(lfw_image(person, number))
        size = round(250 * scale)
        tiles.append(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
    canvas = np.full((300, sum(t.shape[1] for t in tiles) + 40 * len(tiles), 3), 128, dtype=np.uint8)
    x = 20
    spans = []
    for tile in tiles:
        canvas[20 : 20 + tile.shape[0], x : x + tile.shape[1]] = tile
        spans.append((x, x + tile.shape[1]))
        x += tile.shape[1] + 40
    faces = analyzer.analyze(canvas)
    assert len(faces) >= 3
    areas = [f.face.area for f in faces]
    assert areas == sorted(areas, reverse=True)
    # The three biggest faces are the three portraits' subjects, biggest tile first.
    for face, (left, right) in zip(faces[:3], spans, strict=True):
        cx = face.face.box[0] + face.face.box[2] / 2
        assert left < cx < right
    assert len(analyzer.analyze(canvas, max_faces=2)) == 2


@pytest.mark.parametrize("kind", ["flat", "gradient"])
def test_image_without_face_yields_nothing(kind: str, analyzer: FaceAnalyzer) -> None:
    if kind == "flat":
        image = np.full((480, 640, 3), 200, dtype=np.uint8)
    else:
        ramp = np.linspace(0, 255, 640, dtype=np.float32)
        image = np.ascontiguousarray(
            np.stack(
                [np.tile(ramp, (480, 1)), np.tile(ramp[::-1], (480, 1)), np.full((480, 640), 90.0)], axis=2
            )
        ).astype(np.uint8)
    assert analyzer.analyze(image) == []


def test_background_crop_yields_nothing(lfw_image: ImagePath, analyzer: FaceAnalyzer) -> None:
    # The shirt/suit below George W. Bush's chin, enlarged to a normal photo size.
    image = load_rgb(lfw_image("George_W_Bush", 1))
    background = rgb(cv2.resize(image[195:250, 60:190], (520, 220)))
    assert analyzer.analyze(background) == []


def test_exif_rotated_jpeg_embeds_like_upright(
    lfw_image: ImagePath, analyzer: FaceAnalyzer, embedder: OnnxEmbedder
) -> None:
    original = Image.open(lfw_image("Colin_Powell", 1)).convert("RGB")
    upright_buf = io.BytesIO()
    original.save(upright_buf, format="JPEG", quality=95)
    # Pixels stored rotated 90° counter-clockwise; Orientation 6 tells viewers to turn them back.
    rotated = original.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated_buf = io.BytesIO()
    rotated.save(rotated_buf, format="JPEG", quality=95, exif=exif)

    upright = decode_image(upright_buf.getvalue(), max_pixels=40_000_000)
    restored = decode_image(rotated_buf.getvalue(), max_pixels=40_000_000)
    assert restored.shape == upright.shape
    raw_rotated = np.asarray(Image.open(io.BytesIO(rotated_buf.getvalue())).convert("RGB"))
    assert raw_rotated.shape[:2] == upright.shape[1::-1] or raw_rotated.shape == upright.shape
    assert d2(embed_one(analyzer, embedder, restored), embed_one(analyzer, embedder, upright)) < 0.01


def test_detection_on_large_image_is_in_full_resolution_coordinates(
    lfw_image: ImagePath, detector: YuNetDetector
) -> None:
    # A 1280x960 photo whose 2x2 blocks are equal: the detector's internal downscale to 640x480 gives
    # back exactly ``base``, so its answers must be ``base``'s answers scaled by two.
    base = rgb(cv2.resize(load_rgb(lfw_image("Tony_Blair", 1)), (640, 480)))
    big = rgb(np.repeat(np.repeat(base, 2, axis=0), 2, axis=1))
    assert max(big.shape[:2]) > detector.max_side
    native = detector.detect(base)
    large = detector.detect(big)
    assert len(large) == len(native) >= 1
    for small_face, big_face in zip(native, large, strict=True):
        np.testing.assert_allclose(big_face.landmarks, 2 * small_face.landmarks, atol=1e-2)
        np.testing.assert_allclose(big_face.box, 2 * np.array(small_face.box), atol=1e-2)


def test_small_image_upscaled_for_detection_answers_in_its_own_coordinates(
    lfw_image: ImagePath, detector: YuNetDetector
) -> None:
    # min_side 500 makes the detector see the 250x250 photo at 500x500 (bilinear): exactly what it
    # sees when handed that 500x500 copy itself, so the answers must be the copy's, halved.
    image = load_rgb(lfw_image("Colin_Powell", 1))
    upscaling = YuNetDetector(detector.session, score_threshold=0.6, max_side=640, min_side=500)
    assert upscaling.detection_scale(250, 250) == 2.0
    assert upscaling.detection_scale(250, 400) == 640 / 400  # never past max_side
    assert upscaling.detection_scale(500, 600) == 1.0
    assert upscaling.detection_scale(600, 800) == 0.8
    double = rgb(cv2.resize(image, (500, 500), interpolation=cv2.INTER_LINEAR))
    native = detector.detect(double)
    small = upscaling.detect(image)
    assert len(small) == len(native) >= 1
    for small_face, double_face in zip(small, native, strict=True):
        np.testing.assert_allclose(small_face.landmarks, double_face.landmarks / 2, atol=1e-2)
        np.testing.assert_allclose(small_face.box, np.array(double_face.box) / 2, atol=1e-2)


def test_landmark_order_matches_template(lfw_image: ImagePath, detector: YuNetDetector) -> None:
    face = detector.detect(load_rgb(lfw_image("George_W_Bush", 1)))[0]
    right_eye, left_eye, nose, right_mouth, left_mouth = face.landmarks
    assert right_eye[0] < nose[0] < left_eye[0]  # subject's right eye is on the image left
    assert right_mouth[0] < left_mouth[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < min(right_mouth[1], left_mouth[1])


def test_alignment_maps_template_onto_itself() -> None:
    matrix = estimate_similarity(ARCFACE_TEMPLATE_112, ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    rng = np.random.default_rng(3)
    crop = rng.integers(0, 256, size=(112, 112, 3), dtype=np.uint8)
    np.testing.assert_array_equal(align_face(crop, ARCFACE_TEMPLATE_112), crop)


def test_alignment_recovers_a_known_similarity() -> None:
    angle, scale, shift = np.deg2rad(20.0), 2.5, np.array([300.0, 140.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (ARCFACE_TEMPLATE_112 @ (scale * rotation).T + shift).astype(np.float32)
    matrix = estimate_similarity(moved, ARCFACE_TEMPLATE_112)
    back = moved @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(back, ARCFACE_TEMPLATE_112, atol=1e-3)
    np.testing.assert_allclose(template_for((224, 224)), ARCFACE_TEMPLATE_112 * 2, atol=1e-5)


def test_quality_flags_a_tiny_face(lfw_image: ImagePath, analyzer: FaceAnalyzer) -> None:
    small = cv2.resize(load_rgb(lfw_image("Colin_Powell", 1)), (80, 80), interpolation=cv2.INTER_AREA)
    canvas = np.full((400, 400, 3), 120, dtype=np.uint8)
    canvas[160:240, 160:240] = small
    face = main_face(analyzer, canvas)
    assert face.quality.face_size_px < 40
    assert not face.quality.passed
    assert FACE_TOO_SMALL in face.quality.reasons
    sharp = main_face(analyzer, load_rgb(lfw_image("Colin_Powell", 1)))
    assert sharp.quality.passed, sharp.quality.reasons


def test_quality_flags_a_blurred_face(lfw_image: ImagePath, detector: YuNetDetector) -> None:
    gate = FaceAnalyzer(detector, (112, 112), QualityConfig(min_detector_score=0.0, min_sharpness=25.0))
    image = load_rgb(lfw_image("Tony_Blair", 1))
    sharp = main_face(gate, image)
    blurred = main_face(gate, np.ascontiguousarray(cv2.GaussianBlur(image, (0, 0), sigmaX=4.0)))
    assert sharp.quality.passed, sharp.quality
    assert blurred.quality.sharpness < sharp.quality.sharpness / 5
    assert BLURRY in blurred.quality.reasons
    assert not blurred.quality.passed


def test_quality_flags_a_low_detector_score(lfw_image: ImagePath, detector: YuNetDetector) -> None:
    image = load_rgb(lfw_image("George_W_Bush", 1))
    face = detector.detect(image)[0]
    crop = align_face(image, face.landmarks)
    weak = DetectedFace(box=face.box, score=0.5, landmarks=face.landmarks)
    quality = assess_quality(weak, crop, QualityConfig(min_detector_score=0.7))
    assert quality.reasons == [LOW_DETECTOR_SCORE]
    assert assess_quality(face, crop, QualityConfig(min_detector_score=0.7)).passed


def test_embedder_output_contract(
    lfw_image: ImagePath, analyzer: FaceAnalyzer, embedder: OnnxEmbedder
) -> None:
    names = [
        ("George_W_Bush", 1),
        ("Colin_Powell", 1),
        ("Tony_Blair", 1),
        ("Serena_Williams", 1),
        ("Tony_Blair", 2),
    ]
    crops = np.stack([main_face(analyzer, load_rgb(lfw_image(*n))).crop for n in names])
    batch = embedder.embed(crops)
    assert batch.shape == (len(names), 128)
    assert batch.dtype == np.float32
    assert batch.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    singles = np.concatenate([embedder.embed(crops[i : i + 1]) for i in range(len(names))])
    np.testing.assert_allclose(batch, singles, atol=1e-5)
    assert embedder.embed(crops[:0]).shape == (0, 128)
    with pytest.raises(ValueError, match="crops"):
        embedder.embed(crops[:, :100])


def test_aligned_crop_detector_passes_crops_through(
    lfw_image: ImagePath, analyzer: FaceAnalyzer, embedder: OnnxEmbedder
) -> None:
    crop = main_face(analyzer, load_rgb(lfw_image("Serena_Williams", 1))).crop
    passthrough = FaceAnalyzer(AlignedCropDetector(), embedder.input_size, QualityConfig())
    faces = passthrough.analyze(crop)
    assert len(faces) == 1
    np.testing.assert_array_equal(faces[0].crop, crop)
    assert d2(embedder.embed(faces[0].crop[None])[0], embedder.embed(crop[None])[0]) < 1e-8


def test_lfw_protocol_reads_person_disjoint_folds(lfw_root: Path) -> None:
    pairs = read_pairs(lfw_root / "pairs.txt", lfw_root / "images")
    assert len(pairs) == 6000
    assert sum(p.same for p in pairs) == 3000
    people = fold_people(pairs)
    assert sorted(people) == list(range(10))
    assert all(not (people[a] & people[b]) for a in people for b in people if a < b)
    assert all(p.path_a.is_file() and p.path_b.is_file() for p in pairs[:50])


def test_verification_report_on_known_distances() -> None:
    rng = np.random.default_rng(7)
    folds = np.repeat(np.arange(10, dtype=np.int64), 600)
    same = np.tile(np.repeat([True, False], 300), 10)
    distances = np.where(same, rng.uniform(0.2, 1.0, same.size), rng.uniform(1.5, 3.0, same.size))
    perfect = evaluate_verification(distances, same, folds)
    assert perfect.accuracy_mean == 1.0
    assert perfect.roc_auc == 1.0
    assert perfect.tar_at_far_1e3 == 1.0
    assert all(1.0 < t < 1.5 for t in perfect.fold_thresholds)
    # Swap 60 labels in fold 0: only that fold loses accuracy, by exactly 60/600.
    noisy_same = same.copy()
    noisy_same[:60] = ~noisy_same[:60]
    noisy = evaluate_verification(distances, noisy_same, folds)
    assert noisy.fold_accuracies[0] == pytest.approx(0.9)
    assert noisy.fold_accuracies[1:] == [1.0] * 9
    assert noisy.roc_auc < 1.0

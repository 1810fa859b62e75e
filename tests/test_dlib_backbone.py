"""dlib's ResNet as shipped ONNX (models/artifacts/dlib_resnet_v1) and its dlib_5pt_150 alignment, on LFW."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray
from onnx import numpy_helper

from models.convert_dlib import ONNX_FILE, build_onnx, network_input
from models.dlib_format import Affine, Conv, DlibResNet, Pool, ResidualBlock, block_plan
from models.dlib_reference import forward as reference_forward
from service.errors import InvalidModelCard
from service.runtime.alignment import (
    ALIGNMENTS,
    ARCFACE_5PT_112,
    ARCFACE_TEMPLATE_112,
    DLIB_5PT_150,
    align_face,
    dlib_chip_template,
    estimate_similarity,
    get_alignment,
)
from service.runtime.detector import YuNetDetector, load_detector
from service.runtime.embedder import OnnxEmbedder, load_embedder
from service.runtime.imaging import decode_image

ARTIFACTS = Path(__file__).resolve().parents[1] / "models" / "artifacts"
DLIB_DIR = ARTIFACTS / "dlib_resnet_v1"
ImagePath = Callable[[str, int], Path]
PEOPLE = ("Colin_Powell", "Serena_Williams", "Tony_Blair", "Hugo_Chavez", "Jennifer_Aniston")


@pytest.fixture(scope="module")
def detector() -> YuNetDetector:
    return load_detector(ARTIFACTS / "yunet_2023mar_fp32.onnx", "cpu", 1, score_threshold=0.6, max_side=640)


@pytest.fixture(scope="module")
def dlib_embedder() -> OnnxEmbedder:
    return load_embedder(DLIB_DIR, "embedder.json", "cpu", 1)[0]


def load_rgb(path: Path) -> NDArray[np.uint8]:
    return decode_image(path.read_bytes(), max_pixels=40_000_000)


def landmarks_of(detector: YuNetDetector, image: NDArray[np.uint8]) -> NDArray[np.float32]:
    faces = detector.detect(image)
    assert faces, "no face found"
    return max(faces, key=lambda face: face.area).landmarks


def dlib_chips(detector: YuNetDetector, lfw_image: ImagePath, people: tuple[str, ...]) -> NDArray[np.uint8]:
    chips = []
    for person in people:
        image = load_rgb(lfw_image(person, 1))
        chips.append(DLIB_5PT_150.align(image, landmarks_of(detector, image)))
    return np.stack(chips)


def test_templates_are_named_choices() -> None:
    assert set(ALIGNMENTS) == {"arcface_5pt_112", "dlib_5pt_150"}
    assert get_alignment("dlib_5pt_150").size == (150, 150)
    with pytest.raises(InvalidModelCard, match="unknown alignment 'dlib_68pt'"):
        get_alignment("dlib_68pt")


def test_arcface_template_results_are_unchanged(detector: YuNetDetector, lfw_image: ImagePath) -> None:
    """The ArcFace crop is byte for byte what the hard-wired aligner made: Umeyama onto the 112 template,
    bicubic, black border."""
    image = load_rgb(lfw_image("George_W_Bush", 1))
    points = landmarks_of(detector, image)
    before = cv2.warpAffine(
        image,
        estimate_similarity(points, ARCFACE_TEMPLATE_112),
        (112, 112),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    np.testing.assert_array_equal(align_face(image, points, (112, 112)), before)
    np.testing.assert_array_equal(get_alignment("arcface_5pt_112").align(image, points), before)


def test_dlib_template_agrees_with_dlibs_own_five_points() -> None:
    """Our eye centres sit between the eye corners of dlib's 5-point template (same mean face), and
    the nose tip above dlib's nose-bottom point, on the same 150 px / 0.25 padding chip."""
    corners = np.array(
        [
            [0.8595674595992, 0.2134981538014],
            [0.6460604764104, 0.2289674387677],
            [0.1205750620789, 0.2137274526848],
            [0.3340850613712, 0.2290642403242],
        ]
    )
    chip = (0.25 + corners) / 1.5 * 150
    template = dlib_chip_template()
    np.testing.assert_allclose(template[1], chip[:2].mean(axis=0), atol=1.0)  # subject's left eye
    np.testing.assert_allclose(template[0], chip[2:].mean(axis=0), atol=1.0)  # subject's right eye
    nose_bottom = (0.25 + np.array([0.4901123135679, 0.6277975316475])) / 1.5 * 150
    assert abs(template[2, 0] - nose_bottom[0]) < 0.5
    assert template[2, 1] < nose_bottom[1] - 5  # the tip is above the bottom of the nose


@pytest.mark.parametrize(
    "person", ["George_W_Bush", "Serena_Williams", "Junichiro_Koizumi", "Ariel_Sharon", "Colin_Powell"]
)
def test_dlib_chip_puts_landmarks_on_the_template(
    person: str, detector: YuNetDetector, lfw_image: ImagePath
) -> None:
    """Detect on the photo, warp to the 150-px chip, detect again on the chip: the five points come
    back where the template says, within the fit residual of a real face plus YuNet's own jitter
    (~4 px); the ArcFace template scaled to 150 px would be ~20 px off."""
    image = load_rgb(lfw_image(person, 1))
    points = landmarks_of(detector, image)
    chip = DLIB_5PT_150.align(image, points)
    assert chip.shape == (150, 150, 3)
    matrix = DLIB_5PT_150.matrix(points)
    mapped = points @ matrix[:, :2].T + matrix[:, 2]
    assert np.linalg.norm(mapped - DLIB_5PT_150.points, axis=1).mean() < 4.0  # similarity fit
    # Padding the chip gives YuNet the context it is trained with; the offset is undone below.
    pad = 75
    canvas = np.zeros((150 + 2 * pad, 150 + 2 * pad, 3), dtype=np.uint8)
    canvas[pad:-pad, pad:-pad] = chip
    found = landmarks_of(detector, canvas) - pad
    distance = np.linalg.norm(found - DLIB_5PT_150.points, axis=1)
    assert distance.mean() < 5.5, found
    assert distance.max() < 9.0, found
    arcface_150 = ARCFACE_5PT_112.points_for((150, 150))
    assert np.linalg.norm(found - arcface_150, axis=1).mean() > 3 * distance.mean()


def unfolded_from_onnx(path: Path) -> DlibResNet:
    """The shipped ONNX's weights back as a DlibResNet (affines folded, so identity affines here)."""
    weights = {init.name: numpy_helper.to_array(init) for init in onnx.load(str(path)).graph.initializer}

    def conv(prefix: str) -> Conv:
        w = weights[f"{prefix}.weight"]
        stride = 2 if prefix == "stem.conv" else 1
        return Conv(w, weights[f"{prefix}.bias"], stride, 0 if stride == 2 else w.shape[2] // 2)

    def identity(channels: int) -> Affine:
        return Affine(np.ones(channels, np.float32), np.zeros(channels, np.float32))

    blocks = []
    for i, (channels, downsample) in enumerate(block_plan()):
        first = conv(f"block{i}.conv1")
        if downsample:
            first = Conv(first.weight, first.bias, 2, 0)
        blocks.append(
            ResidualBlock(first, identity(channels), conv(f"block{i}.conv2"), identity(channels), downsample)
        )
    return DlibResNet(
        input_mean=(122.782, 117.001, 104.298),
        stem_conv=conv("stem.conv"),
        stem_affine=identity(32),
        stem_pool=Pool("max", 3, 2, 0),
        blocks=blocks,
        fc_weight=weights["fc.weight"],
    )


def test_shipped_onnx_matches_the_numpy_reference(detector: YuNetDetector, lfw_image: ImagePath) -> None:
    """The graph (padding, strides, dlib's zero-padded residual adds) against the plain NumPy forward
    pass of its own weights, on real dlib chips; and the builder reproduces the shipped file."""
    net = unfolded_from_onnx(DLIB_DIR / ONNX_FILE)
    chips = dlib_chips(detector, lfw_image, PEOPLE[:3])
    session = ort.InferenceSession(str(DLIB_DIR / ONNX_FILE), providers=["CPUExecutionProvider"])
    ours = session.run(["embedding"], {"input": network_input(chips, net)})[0]
    reference = reference_forward(net, chips)
    assert np.abs(ours - reference).max() < 1e-4
    rebuilt = build_onnx(net)  # identity affines: folding them is exact
    again = ort.InferenceSession(rebuilt.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(
        again.run(["embedding"], {"input": network_input(chips, net)})[0], ours, atol=1e-5
    )


def test_card_and_embedder_follow_the_card(dlib_embedder: OnnxEmbedder) -> None:
    card = dlib_embedder.card
    assert card.alignment == "dlib_5pt_150"
    assert [a.name for a in dlib_embedder.alignments] == ["dlib_5pt_150"]
    assert dlib_embedder.input_size == (150, 150)
    assert card.license == "CC0-1.0"
    checks = card.provenance["conversion_checks"]
    assert checks["max_abs_onnx_vs_numpy_reference"] < 1e-4


def test_dlib_embeddings_separate_people(
    dlib_embedder: OnnxEmbedder, detector: YuNetDetector, lfw_image: ImagePath
) -> None:
    """Two photos of each person are closer than any two people, under the card's threshold."""
    people = PEOPLE[:4]
    first = dlib_embedder.embed(dlib_chips(detector, lfw_image, people))
    second_chips = []
    for person in people:
        image = load_rgb(lfw_image(person, 2))
        second_chips.append(DLIB_5PT_150.align(image, landmarks_of(detector, image)))
    second = dlib_embedder.embed(np.stack(second_chips))
    d2 = ((first[:, None] - second[None]) ** 2).sum(-1)
    same = np.diag(d2)
    other = d2[~np.eye(len(people), dtype=bool)]
    assert same.max() < other.min()
    threshold = dlib_embedder.card.threshold
    assert same.max() < threshold < other.min()

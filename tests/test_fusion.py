"""The fused model's pieces on real LFW faces: precomputed embeddings, the score-fusion identity behind the
initialisation, projection training with the triplet pipeline, and the one-graph ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from models.train.fusion_data import BackboneEmbeddings, LfwFaces, aligner_for, detect_landmarks, embed_faces
from models.train.fusion_eval import flip_average
from models.train.fusion_export import (
    MAX_ABS_DIFF,
    compose_fused,
    fused_embeddings,
    load_backbone,
    make_card,
    parity,
    reference_embeddings,
)
from models.train.fusion_model import (
    FusionConfig,
    SavedProjection,
    concatenate,
    load_projection,
    pca_only,
    save_projection,
    score_fusion_weights,
    train_fusion,
)
from service.runtime.analyzer import FaceAnalyzer
from service.runtime.detector import load_detector
from service.runtime.embedder import load_embedder
from service.runtime.imaging import decode_image
from service.runtime.quality import QualityConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO_ROOT / "models" / "artifacts"
PEOPLE = [
    "George_W_Bush",
    "Colin_Powell",
    "Tony_Blair",
    "Donald_Rumsfeld",
    "Gerhard_Schroeder",
    "Ariel_Sharon",
    "Hugo_Chavez",
    "Junichiro_Koizumi",
    "Jean_Chretien",
    "John_Ashcroft",
    "Serena_Williams",
    "Jacques_Chirac",
]
PER_PERSON = 6


@pytest.fixture(scope="module")
def faces(lfw_root: Path) -> LfwFaces:
    names = [f"{p}/{p}_{n:04d}.jpg" for p in PEOPLE for n in range(1, PER_PERSON + 1)]
    detector = load_detector(ARTIFACTS / "yunet_2023mar_fp32.onnx", "cpu", 1, 0.6, 640)
    return detect_landmarks(lfw_root / "images", names, detector, (112, 112))


@pytest.fixture(scope="module")
def sface(lfw_root: Path, faces: LfwFaces) -> BackboneEmbeddings:
    embedder, card = load_embedder(ARTIFACTS, "embedder.json", "cpu", 1)
    return embed_faces(lfw_root / "images", faces, embedder, aligner_for(card.alignment), batch_size=32)


def squared(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float64]:
    return ((a.astype(np.float64) - b.astype(np.float64)) ** 2).sum(axis=-1)


def test_every_image_gets_its_centre_face_and_unit_embeddings(
    faces: LfwFaces, sface: BackboneEmbeddings
) -> None:
    assert faces.methods.count("centre_face") == len(faces.names)
    assert faces.landmarks.shape == (len(faces.names), 5, 2)
    assert sface.plain.shape == sface.flipped.shape == (len(faces.names), 128)
    np.testing.assert_allclose(np.linalg.norm(sface.plain, axis=1), 1.0, atol=1e-5)
    # A mirrored face is still the same person: much closer to its original than to other people.
    people = np.array(faces.people)
    self_d = squared(sface.plain, sface.flipped)
    other = squared(sface.plain[:, None], sface.plain[None, :])[people[:, None] != people[None, :]]
    assert np.median(self_d) < 0.5 * np.median(other)


def test_weighted_concatenation_is_score_fusion(sface: BackboneEmbeddings) -> None:
    """d² of the weighted concatenation = Σ wᵢ² d²ᵢ: with wᵢ = 1/√mᵢ it is score fusion exactly."""
    parts = [sface.plain, sface.flipped]
    weights = score_fusion_weights(parts)
    fused = concatenate(parts, weights)
    i, j = np.triu_indices(len(fused), k=1)
    expected = sum(w * w * squared(p[i], p[j]) for p, w in zip(parts, weights, strict=True))
    np.testing.assert_allclose(squared(fused[i], fused[j]), expected, atol=1e-5)


def test_pca_start_of_a_square_projection_keeps_every_distance(sface: BackboneEmbeddings) -> None:
    start = pca_only([sface.plain])
    out = start.embed([sface.plain])
    i, j = np.triu_indices(len(out), k=1)
    np.testing.assert_allclose(squared(out[i], out[j]), squared(sface.plain[i], sface.plain[j]), atol=1e-5)


def test_projection_training_lowers_the_triplet_loss(faces: LfwFaces, sface: BackboneEmbeddings) -> None:
    labels = np.unique(np.array(faces.people), return_inverse=True)[1].astype(np.int64)
    # A deliberately poor second "backbone" (a fixed random rotation of the mirrored view) to fuse.
    rotation = np.linalg.qr(np.random.default_rng(0).standard_normal((128, 128)))[0].astype(np.float32)
    plain = [sface.plain, sface.flipped @ rotation]
    flipped = [sface.flipped, sface.plain @ rotation]
    config = FusionConfig(steps=80, identities_per_batch=8, images_per_identity=4, lr=3e-3, margin=0.4)
    trained = train_fusion(plain, flipped, labels, config)
    assert np.mean(trained.losses[-10:]) < 0.7 * np.mean(trained.losses[:10])
    out = trained.embed(plain)
    assert out.shape == (len(labels), 128)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_flip_average_is_a_unit_vector_between_both_views(sface: BackboneEmbeddings) -> None:
    mean = flip_average(sface.plain, sface.flipped)
    np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(squared(mean, sface.plain), squared(mean, sface.flipped), atol=1e-5)


def test_fused_onnx_matches_the_reference_and_embeds_alone_as_in_a_batch(
    lfw_root: Path, faces: LfwFaces, tmp_path: Path
) -> None:
    """Two image inputs (each aligned for its backbone) → one 128-d unit vector; parity < 1e-4."""
    first = load_backbone("sface", ARTIFACTS, "embedder.json")
    second = load_backbone("mirror", ARTIFACTS, "embedder.json")
    rng = np.random.default_rng(1)
    projection = SavedProjection(
        ["sface", "mirror"],
        np.array([1.3, 0.6], dtype=np.float32),
        rng.standard_normal((128, 256)).astype(np.float32),
        {"note": "test"},
    )
    save_projection_path = tmp_path / "projection.npz"
    model = compose_fused([first, second], projection)
    assert [i.name for i in model.graph.input] == ["sface_data", "mirror_data"]
    card = make_card("t", "t.onnx", [first, second], projection, 1.0, "test", "0")
    assert card["format_version"] == 2
    assert [i["alignment"] for i in card["inputs"]] == ["arcface_5pt_112"] * 2

    align = aligner_for("arcface_5pt_112")
    images_dir = lfw_root / "images"
    crops = np.stack(
        [
            align(decode_image((images_dir / n).read_bytes(), max_pixels=10**7), lm, (112, 112))
            for n, lm in zip(faces.names[:8], faces.landmarks[:8], strict=True)
        ]
    )
    mirrored = np.ascontiguousarray(crops[:, :, ::-1])
    assert parity(model, card, [first, second], projection, [crops, mirrored]) < MAX_ABS_DIFF
    batch = fused_embeddings(model, card, [crops, mirrored])
    alone = fused_embeddings(model, card, [crops[3:4], mirrored[3:4]])
    np.testing.assert_allclose(alone[0], batch[3], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    # The two inputs really are separate paths: swapping them changes the embedding.
    swapped = fused_embeddings(model, card, [mirrored, crops])
    assert float(np.abs(swapped - batch).max()) > 1e-2

    # The saved projection (what the export reads) reproduces the head.
    trained = pca_only([np.asarray(p, dtype=np.float32) for p in (batch, batch)])
    save_projection(save_projection_path, trained, ["a", "b"], {"command": "test"})
    loaded = load_projection(save_projection_path)
    np.testing.assert_allclose(loaded.embed([batch, batch]), trained.embed([batch, batch]), atol=1e-5)
    assert loaded.meta == {"command": "test"}


FUSED = ARTIFACTS / "fused_sface_dlib"


def test_shipped_fused_model_matches_its_backbones_and_projection(lfw_image) -> None:  # type: ignore[no-untyped-def]
    """The shipped graph, loaded as the service loads it, against SFace's and dlib's own ONNX files plus
    the NumPy head (projection.npz): < 1e-4 on real LFW faces, and a face alone embeds as in a batch."""
    embedder, card = load_embedder(FUSED, "embedder.json", "cpu", 1)
    assert card.format_version == 2
    assert [spec.alignment for spec in card.model_inputs] == ["arcface_5pt_112", "dlib_5pt_150"]
    detector = load_detector(FUSED / "yunet_2023mar_fp32.onnx", "cpu", 1, 0.6, 640)
    analyzer = FaceAnalyzer(detector, embedder.alignments, QualityConfig())
    photos = [lfw_image(p, n) for p in ("Colin_Powell", "Serena_Williams", "Tony_Blair") for n in (1, 2)]
    faces = [analyzer.analyze(decode_image(p.read_bytes(), max_pixels=10**7), max_faces=1)[0] for p in photos]
    crops = [np.stack([f.crops[i] for f in faces]) for i in range(2)]
    fused = embedder.embed(crops)
    backbones = [
        load_backbone("sface", ARTIFACTS, "embedder.json"),
        load_backbone("dlib", ARTIFACTS / "dlib_resnet_v1", "embedder.json"),
    ]
    reference = reference_embeddings(backbones, load_projection(FUSED / "projection.npz"), crops)
    assert float(np.abs(fused - reference).max()) < MAX_ABS_DIFF
    alone = embedder.embed([c[2:3] for c in crops])
    np.testing.assert_allclose(alone[0], fused[2], atol=1e-5)
    # Same person closer than different people, at the card's verification threshold.
    d = squared(fused[:, None], fused[None, :])
    assert d[0, 1] < card.threshold < d[0, 2]
    assert d[2, 3] < card.threshold < d[2, 4]

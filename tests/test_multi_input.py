"""Card format 2: a model with several image inputs (one crop per alignment) runs through the service.

The two-input model here is real: the shipped SFace and dlib ResNet graphs side by side
(``onnx.compose.add_prefix``), each output L2-normalised, concatenated and projected to 128-d by a
fixed orthonormal matrix — the shape of the fused model of issue 11, before its projection is trained.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from onnx import TensorProto, compose, helper, numpy_helper

from service.bootstrap import load_face_models
from service.errors import InvalidModelCard
from service.main import create_app
from service.runtime.analyzer import FaceAnalyzer
from service.runtime.batcher import EmbeddingBatcher
from service.runtime.detector import YuNetDetector, load_detector
from service.runtime.embedder import OnnxEmbedder, load_embedder
from service.runtime.imaging import decode_image
from service.runtime.model_card import ModelCard
from service.runtime.quality import QualityConfig
from service.settings import Settings

ARTIFACTS = Path(__file__).resolve().parents[1] / "models" / "artifacts"
DLIB_DIR = ARTIFACTS / "dlib_resnet_v1"
YUNET = ARTIFACTS / "yunet_2023mar_fp32.onnx"
ImagePath = Callable[[str, int], Path]
FACES = [
    ("Colin_Powell", 1),
    ("Serena_Williams", 1),
    ("Tony_Blair", 1),
    ("Hugo_Chavez", 1),
    ("Colin_Powell", 2),
]


def projection() -> NDArray[np.float32]:
    """A fixed 256 → 128 projection with orthonormal columns (distances roughly kept)."""
    q, _ = np.linalg.qr(np.random.default_rng(11).standard_normal((256, 128)))
    return np.ascontiguousarray(q, dtype=np.float32)


def two_input_model() -> onnx.ModelProto:
    sface = compose.add_prefix(onnx.load(str(ARTIFACTS / "sface_2021dec_fp32.onnx")), "sface/")
    dlib = compose.add_prefix(onnx.load(str(DLIB_DIR / "dlib_resnet_v1.onnx")), "dlib/")
    head = [
        helper.make_node("LpNormalization", ["sface/fc1"], ["sface_unit"], axis=1, p=2),
        helper.make_node("LpNormalization", ["dlib/embedding"], ["dlib_unit"], axis=1, p=2),
        helper.make_node("Concat", ["sface_unit", "dlib_unit"], ["both"], axis=1),
        helper.make_node("MatMul", ["both", "projection"], ["embedding"]),
    ]
    graph = helper.make_graph(
        [*sface.graph.node, *dlib.graph.node, *head],
        "two_input_test",
        [*sface.graph.input, *dlib.graph.input],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 128])],
        [
            *sface.graph.initializer,
            *dlib.graph.initializer,
            numpy_helper.from_array(projection(), "projection"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def v2_card() -> dict[str, Any]:
    return {
        "format_version": 2,
        "name": "sface_dlib_test",
        "onnx_file": "two_input.onnx",
        "embedding_dim": 128,
        "inputs": [
            {
                "width": 112,
                "height": 112,
                "layout": "NCHW",
                "channel_order": "BGR",
                "mean": [0, 0, 0],
                "std": [1, 1, 1],
                "input_name": "sface/data",
                "alignment": "arcface_5pt_112",
            },
            {
                "width": 150,
                "height": 150,
                "layout": "NCHW",
                "channel_order": "RGB",
                "mean": [122.782, 117.001, 104.298],
                "std": [256, 256, 256],
                "input_name": "dlib/input",
                "alignment": "dlib_5pt_150",
            },
        ],
        "output_name": "embedding",
        "threshold": 0.9,
        "license": "test only",
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("two_input")
    onnx.save_model(two_input_model(), str(folder / "two_input.onnx"))
    (folder / "embedder.json").write_text(json.dumps(v2_card()))
    (folder / "yunet_2023mar_fp32.onnx").symlink_to(YUNET)
    return folder


@pytest.fixture(scope="module")
def fused(model_dir: Path) -> OnnxEmbedder:
    return load_embedder(model_dir, "embedder.json", "cpu", 1)[0]


@pytest.fixture(scope="module")
def analyzer(fused: OnnxEmbedder) -> FaceAnalyzer:
    detector: YuNetDetector = load_detector(YUNET, "cpu", 1, score_threshold=0.6, max_side=640)
    return FaceAnalyzer(detector, fused.alignments, QualityConfig())


@pytest.fixture(scope="module")
def crops(analyzer: FaceAnalyzer, lfw_image: ImagePath) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    faces = []
    for person, n in FACES:
        found = analyzer.analyze(decode_image(lfw_image(person, n).read_bytes(), max_pixels=10**8))
        assert found, person
        faces.append(found[0])
    arcface = np.stack([f.crops[0] for f in faces])
    chip = np.stack([f.crops[1] for f in faces])
    return arcface, chip


def test_v1_cards_still_load_as_one_input() -> None:
    card = ModelCard.load(ARTIFACTS / "embedder.json")
    assert card.format_version == 1
    [spec] = card.model_inputs
    assert (spec.input_name, spec.alignment, spec.width) == ("data", "arcface_5pt_112", 112)
    assert card.embedding_output == "fc1"
    minimal = ModelCard.model_validate({"name": "m", "onnx_file": "m.onnx", "threshold": 1.0})
    assert minimal.model_inputs[0].alignment == "arcface_5pt_112"


def test_v2_card_round_trip(tmp_path: Path) -> None:
    card = ModelCard.model_validate(v2_card())
    assert [i.alignment for i in card.model_inputs] == ["arcface_5pt_112", "dlib_5pt_150"]
    assert card.embedding_output == "embedding"
    card.save(tmp_path / "card.json")
    saved = json.loads((tmp_path / "card.json").read_text())
    assert "input" not in saved
    assert "alignment" not in saved
    assert ModelCard.load(tmp_path / "card.json") == card
    with pytest.raises(ValueError, match="single-input"):
        _ = card.single_input


def test_analyzer_makes_one_crop_per_input(
    fused: OnnxEmbedder, analyzer: FaceAnalyzer, lfw_image: ImagePath
) -> None:
    assert [(a.name, a.size) for a in fused.alignments] == [
        ("arcface_5pt_112", (112, 112)),
        ("dlib_5pt_150", (150, 150)),
    ]
    [face] = analyzer.analyze(decode_image(lfw_image("Tony_Blair", 2).read_bytes(), max_pixels=10**8))
    assert [c.shape for c in face.crops] == [(112, 112, 3), (150, 150, 3)]
    assert face.crop is face.crops[0]


def test_two_inputs_are_fed_as_their_card_entries_say(
    fused: OnnxEmbedder, crops: tuple[NDArray[np.uint8], NDArray[np.uint8]]
) -> None:
    """The fused output equals the same head applied to the two shipped single-input embedders."""
    sface = load_embedder(ARTIFACTS, "embedder.json", "cpu", 1)[0]
    dlib = load_embedder(DLIB_DIR, "embedder.json", "cpu", 1)[0]
    arcface, chip = crops
    expected = np.concatenate([sface.embed(arcface), dlib.embed(chip)], axis=1) @ projection()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(fused.embed((arcface, chip)), expected, atol=2e-5)
    with pytest.raises(ValueError, match="takes 2 crops per face"):
        fused.embed(arcface)


def test_same_face_alone_or_in_a_batch(
    fused: OnnxEmbedder, crops: tuple[NDArray[np.uint8], NDArray[np.uint8]]
) -> None:
    arcface, chip = crops
    together = fused.embed((arcface, chip))
    alone = np.concatenate([fused.embed((arcface[i : i + 1], chip[i : i + 1])) for i in range(len(chip))])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    same, other = ((together[0] - together[4]) ** 2).sum(), ((together[0] - together[1]) ** 2).sum()
    assert same < other  # Colin Powell twice vs Colin Powell / Serena Williams

    async def through_batcher() -> list[NDArray[np.float32]]:
        batcher = EmbeddingBatcher(fused, enabled=True, max_batch=32, max_wait_ms=50)
        await batcher.start()
        try:
            requests = [batcher.embed((arcface[i : i + 1], chip[i : i + 1])) for i in range(len(chip))]
            requests.append(batcher.embed((arcface[1:4], chip[1:4])))
            return list(await asyncio.gather(*requests))
        finally:
            await batcher.stop()

    batched = asyncio.run(through_batcher())
    np.testing.assert_allclose(np.concatenate(batched[:-1]), alone, atol=1e-5)
    np.testing.assert_allclose(batched[-1], alone[1:4], atol=1e-5)


def _mutate(card: dict[str, Any], change: str) -> None:
    inputs = card["inputs"]
    if change == "unknown_input":
        inputs[1]["input_name"] = "dlib/image"
    elif change == "undescribed_input":
        del inputs[1]
    elif change == "wrong_size":
        inputs[1]["width"] = inputs[1]["height"] = 112
    elif change == "unknown_alignment":
        inputs[0]["alignment"] = "arcface_5pt_96"
    elif change == "unknown_output":
        card["output_name"] = "fc1"
    elif change == "wrong_dim":
        card["embedding_dim"] = 256
    elif change == "v1_fields_in_v2":
        card["alignment"] = "arcface_5pt_112"
    elif change == "no_output_name":
        del card["output_name"]
    elif change == "duplicate_input":
        inputs[1]["input_name"] = inputs[0]["input_name"]


REFUSALS = {
    "unknown_input": r"inputs \['dlib/image'\] are not in the graph",
    "undescribed_input": r"graph inputs \['dlib/input'\] are not described by the card",
    "wrong_size": r"input 'dlib/input': the card says NCHW 112x112 .* graph input has shape",
    "unknown_alignment": r"unknown alignment 'arcface_5pt_96'",
    "unknown_output": r"no output 'fc1' in the graph",
    "wrong_dim": r"output 'embedding' is 128-d, the card says 256",
    "v1_fields_in_v2": r"format_version 2 card has version-1 fields \['alignment'\]",
    "no_output_name": r"needs a top-level 'output_name'",
    "duplicate_input": r"input names must be distinct",
}


@pytest.mark.parametrize("change", sorted(REFUSALS))
def test_a_card_that_does_not_match_its_graph_is_refused_at_start_up(
    change: str, model_dir: Path, tmp_path: Path
) -> None:
    card = v2_card()
    _mutate(card, change)
    (model_dir / f"bad_{change}.json").write_text(json.dumps(card))
    settings = Settings(
        model_dir=model_dir,
        embedder_card=f"bad_{change}.json",
        execution_provider="cpu",
        intra_op_threads=1,
        database_url=f"sqlite:///{tmp_path}/faces.db",
        index_dir=tmp_path / "index",
    )
    with pytest.raises(InvalidModelCard, match=REFUSALS[change]) as refused:
        load_face_models(settings)
    assert refused.value.code == "invalid_model_card"


def test_the_app_refuses_to_start_and_says_why(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    card = v2_card()
    _mutate(card, "wrong_size")
    (model_dir / "bad_app.json").write_text(json.dumps(card))
    settings = Settings(
        model_dir=model_dir,
        embedder_card="bad_app.json",
        execution_provider="cpu",
        database_url=f"sqlite:///{tmp_path}/faces.db",
        index_dir=tmp_path / "index",
    )
    with caplog.at_level(logging.ERROR), pytest.raises(InvalidModelCard), TestClient(create_app(settings)):
        pass
    assert "refusing to start" in caplog.text
    assert "input 'dlib/input'" in caplog.text


@pytest.fixture(scope="module")
def client(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("two_input_api")
    settings = Settings(
        model_dir=model_dir,
        execution_provider="cpu",
        database_url=f"sqlite:///{tmp}/faces.db",
        index_dir=tmp / "index",
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_the_service_runs_a_two_input_model(client: TestClient, lfw_image: ImagePath) -> None:
    assert client.post("/v1/collections", json={"name": "fused"}).status_code == 201
    for person in ("Colin_Powell", "Serena_Williams"):
        files = [("images", (f"{n}.jpg", lfw_image(person, n).read_bytes(), "image/jpeg")) for n in (1, 2)]
        response = client.post(
            f"/v1/collections/fused/subjects/{person}/faces", params={"create_subject": "true"}, files=files
        )
        assert response.status_code == 201, response.text
    probe = {"image": ("p.jpg", lfw_image("Serena_Williams", 3).read_bytes(), "image/jpeg")}
    faces = client.post("/v1/collections/fused/identify", files=probe).json()["faces"]
    assert faces[0]["match"]["subject_id"] == "Serena_Williams"
    stranger = {"image": ("s.jpg", lfw_image("Tony_Blair", 2).read_bytes(), "image/jpeg")}
    assert client.post("/v1/collections/fused/identify", files=stranger).json()["faces"][0]["match"] is None

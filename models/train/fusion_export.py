"""One ONNX graph for the fused model: every backbone's input → its unit vector → weighted concatenation →
the trained projection → 128-d unit vector; a format_version 2 card describes each input.

    python -m models.train.fusion_export --projection runs/fusion/projection.npz \
        --backbone models/artifacts:embedder.json --backbone models/artifacts/dlib_resnet_v1:embedder.json \
        --out models/artifacts/fused_sface_dlib

Each backbone graph is copied in whole with its names prefixed (``<backbone>_``), so its input keeps its
meaning (``sface_data`` is SFace's ``data``); the per-backbone weights are folded into the projection
matrix, so the head is LpNormalization per backbone → Concat → MatMul → LpNormalization. The batch axis
stays dynamic; all inputs of one call must carry the same faces in the same order.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from numpy.typing import NDArray
from onnx import TensorProto, compose, helper, numpy_helper, version_converter

from models.train.fusion_model import FUSED_DIM, REPO_ROOT, SavedProjection, load_projection

logger = logging.getLogger(__name__)

OUTPUT_NAME = "embedding"
MAX_ABS_DIFF = 1e-4


@dataclass(frozen=True)
class BackboneGraph:
    """One backbone as the export sees it: its ONNX graph and the card fields that describe its input."""

    name: str
    model: onnx.ModelProto
    input_name: str
    output_name: str
    input_spec: dict[str, Any]  # the card's InputSpec fields (input_name is rewritten to the prefixed one)
    alignment: str
    card: dict[str, Any]
    onnx_sha256: str


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_backbone(name: str, model_dir: Path, card_file: str) -> BackboneGraph:
    """A backbone from its own (format_version 1) card: one input, one output, one alignment."""
    card = json.loads((model_dir / card_file).read_text())
    if "input" not in card:
        raise ValueError(f"{model_dir / card_file}: a backbone card needs a single 'input'")
    onnx_path = model_dir / card["onnx_file"]
    spec = dict(card["input"])
    return BackboneGraph(
        name=name,
        model=onnx.load(onnx_path),
        input_name=spec["input_name"],
        output_name=spec["output_name"],
        input_spec=spec,
        alignment=card.get("alignment", "arcface_5pt_112"),
        card=card,
        onnx_sha256=sha256(onnx_path),
    )


def _opset(model: onnx.ModelProto) -> int:
    return int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")))


def _restrict(model: onnx.ModelProto, input_name: str, output_name: str) -> onnx.ModelProto:
    """Only the embedding path: the named input and output (other outputs are dropped)."""
    graph = model.graph
    if input_name not in {i.name for i in graph.input}:
        raise ValueError(f"no input {input_name!r} in {[i.name for i in graph.input]}")
    if output_name not in {o.name for o in graph.output}:
        raise ValueError(f"no output {output_name!r} in {[o.name for o in graph.output]}")
    kept = [o for o in graph.output if o.name == output_name]
    del graph.output[:]
    graph.output.extend(kept)
    return model


def compose_fused(
    backbones: Sequence[BackboneGraph], projection: SavedProjection, opset: int | None = None
) -> onnx.ModelProto:
    """The single fused graph (inputs ``<name>_<input>``, output ``embedding``, dynamic batch)."""
    if [b.name for b in backbones] != projection.backbones:
        raise ValueError(f"projection trained on {projection.backbones}, got {[b.name for b in backbones]}")
    target = opset if opset is not None else max(_opset(b.model) for b in backbones)
    parts: list[onnx.ModelProto] = []
    for backbone in backbones:
        model = onnx.ModelProto()
        model.CopyFrom(backbone.model)
        model = _restrict(model, backbone.input_name, backbone.output_name)
        if _opset(model) != target:
            model = version_converter.convert_version(model, target)
        parts.append(compose.add_prefix(model, f"{backbone.name}_"))

    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    inputs: list[onnx.ValueInfoProto] = []
    value_info: list[onnx.ValueInfoProto] = []
    normalised: list[str] = []
    dims = []
    for backbone, part in zip(backbones, parts, strict=True):
        nodes.extend(part.graph.node)
        initializers.extend(part.graph.initializer)
        inputs.extend(i for i in part.graph.input if i.name == f"{backbone.name}_{backbone.input_name}")
        value_info.extend(part.graph.value_info)
        out = f"{backbone.name}_{backbone.output_name}"
        flat = f"fusion/{backbone.name}_flat"
        unit = f"fusion/{backbone.name}_unit"
        nodes.append(
            helper.make_node("Flatten", [out], [flat], axis=1, name=f"fusion/{backbone.name}_flatten")
        )
        nodes.append(
            helper.make_node(
                "LpNormalization", [flat], [unit], axis=1, p=2, name=f"fusion/{backbone.name}_l2"
            )
        )
        normalised.append(unit)
        dims.append(int(part.graph.output[0].type.tensor_type.shape.dim[-1].dim_value))
    if sum(dims) != projection.projection.shape[1]:
        raise ValueError(
            f"backbone outputs {dims} do not sum to the projection's {projection.projection.shape[1]}"
        )
    # Fold each backbone's weight into its block of the projection: W·[w₁u₁; w₂u₂] = [W₁w₁ W₂w₂]·[u₁; u₂].
    scale = np.concatenate(
        [np.full(d, w, dtype=np.float64) for d, w in zip(dims, projection.weights, strict=True)]
    )
    matrix = (projection.projection.astype(np.float64) * scale[None, :]).T.astype(np.float32)
    initializers.append(numpy_helper.from_array(np.ascontiguousarray(matrix), "fusion/projection"))
    nodes += [
        helper.make_node("Concat", normalised, ["fusion/concat"], axis=1, name="fusion/concat"),
        helper.make_node(
            "MatMul", ["fusion/concat", "fusion/projection"], ["fusion/projected"], name="fusion/project"
        ),
        helper.make_node(
            "LpNormalization", ["fusion/projected"], [OUTPUT_NAME], axis=1, p=2, name="fusion/l2"
        ),
    ]
    output = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", FUSED_DIM])
    graph = helper.make_graph(nodes, "fused_embedder", inputs, [output], initializers, value_info=value_info)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", target)],
        producer_name="faces models.train.fusion_export",
        ir_version=max(p.ir_version for p in parts),
    )
    onnx.checker.check_model(model)
    return model


def make_card(
    name: str,
    onnx_file: str,
    backbones: Sequence[BackboneGraph],
    projection: SavedProjection,
    threshold: float,
    command: str,
    onnx_sha: str,
) -> dict[str, Any]:
    """The format_version 2 card: one entry per input, in the graph's input order."""
    inputs = []
    for backbone in backbones:
        spec = dict(backbone.input_spec)
        spec["input_name"] = f"{backbone.name}_{backbone.input_name}"
        spec.pop("output_name", None)
        spec["alignment"] = backbone.alignment
        inputs.append(spec)
    return {
        "format_version": 2,
        "name": name,
        "onnx_file": onnx_file,
        "embedding_dim": FUSED_DIM,
        "normalized": True,
        "inputs": inputs,
        "output_name": OUTPUT_NAME,
        "threshold": threshold,
        "provenance": {
            "architecture": (
                "fusion: " + " + ".join(b.name for b in backbones) + ", each output L2-normalised, "
                "weighted, concatenated, linear projection to 128-d, L2-normalised"
            ),
            "backbones": {
                b.name: {
                    "card": b.card.get("name"),
                    "onnx_sha256": b.onnx_sha256,
                    "provenance": b.card.get("provenance", {}),
                    "license": b.card.get("license", ""),
                }
                for b in backbones
            },
            "projection": projection.meta,
            "backbone_weights": [float(w) for w in projection.weights],
            "export_command": command,
            "onnx_sha256": onnx_sha,
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
        "license": " AND ".join(
            dict.fromkeys(b.card.get("license", "") for b in backbones if b.card.get("license"))
        ),
        "metrics": {},
    }


def network_input(crops: NDArray[np.uint8], spec: dict[str, Any]) -> NDArray[np.float32]:
    """The card's transform (as the service's OnnxEmbedder applies it): RGB uint8 crops → network input."""
    pixels = crops[..., ::-1] if spec["channel_order"] == "BGR" else crops
    batch = (pixels.astype(np.float32) - np.asarray(spec["mean"], dtype=np.float32)) / np.asarray(
        spec["std"], dtype=np.float32
    )
    if spec["layout"] == "NCHW":
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32)


def reference_embeddings(
    backbones: Sequence[BackboneGraph], projection: SavedProjection, crops: Sequence[NDArray[np.uint8]]
) -> NDArray[np.float32]:
    """Each backbone's own ONNX (as shipped) → the NumPy reference head."""
    parts = []
    for backbone, batch in zip(backbones, crops, strict=True):
        session = ort.InferenceSession(backbone.model.SerializeToString(), providers=["CPUExecutionProvider"])
        raw = session.run(
            [backbone.output_name], {backbone.input_name: network_input(batch, backbone.input_spec)}
        )[0]
        parts.append(np.asarray(raw, dtype=np.float32).reshape(len(batch), -1))
    return projection.embed(parts)


def fused_embeddings(
    model: onnx.ModelProto | Path, card: dict[str, Any], crops: Sequence[NDArray[np.uint8]]
) -> NDArray[np.float32]:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    feeds = {
        spec["input_name"]: network_input(batch, spec)
        for spec, batch in zip(card["inputs"], crops, strict=True)
    }
    out = session.run([card["output_name"]], feeds)[0]
    return np.asarray(out, dtype=np.float32)


def parity(
    model: onnx.ModelProto | Path,
    card: dict[str, Any],
    backbones: Sequence[BackboneGraph],
    projection: SavedProjection,
    crops: Sequence[NDArray[np.uint8]],
) -> float:
    """Max |fused ONNX − reference| over the given crops (one array per input, same faces in order)."""
    return float(
        np.abs(
            fused_embeddings(model, card, crops) - reference_embeddings(backbones, projection, crops)
        ).max()
    )


def parity_crops(backbones: Sequence[BackboneGraph], lfw_dir: Path, count: int) -> list[NDArray[np.uint8]]:
    """Real LFW faces, each aligned for every backbone as the service aligns them."""
    from models.evaluate_lfw import FALLBACK_SCORE, MAX_PIXELS, choose_face
    from models.train.fusion_data import aligner_for
    from service.runtime.analyzer import FaceAnalyzer
    from service.runtime.detector import YuNetDetector, load_detector
    from service.runtime.imaging import decode_image
    from service.runtime.quality import QualityConfig

    detector = load_detector(
        REPO_ROOT / "models" / "artifacts" / "yunet_2023mar_fp32.onnx", "cpu", 1, 0.6, 640
    )
    fallback = YuNetDetector(detector.session, score_threshold=FALLBACK_SCORE)
    analyzer = FaceAnalyzer(detector, (112, 112), QualityConfig())
    paths = sorted((lfw_dir / "images").glob("A*/*_0001.jpg"))[:count]
    per_input: list[list[NDArray[np.uint8]]] = [[] for _ in backbones]
    for path in paths:
        image = decode_image(path.read_bytes(), max_pixels=MAX_PIXELS)
        choice = choose_face(image, analyzer, fallback)
        if choice.landmarks is None:
            continue
        for slot, backbone in zip(per_input, backbones, strict=True):
            size = (int(backbone.input_spec["width"]), int(backbone.input_spec["height"]))
            slot.append(aligner_for(backbone.alignment)(image, choice.landmarks, size))
    return [np.stack(slot) for slot in per_input]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--projection", type=Path, required=True, help="python -m models.train.fusion train output"
    )
    parser.add_argument(
        "--backbone",
        action="append",
        required=True,
        help="MODEL_DIR:CARD per backbone, in the projection's order",
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="fused_sface_dlib")
    parser.add_argument("--threshold", type=float, default=1.0, help="until evaluate_lfw --update-card")
    parser.add_argument(
        "--detector",
        default="yunet_2023mar_fp32.onnx",
        help="detector in models/artifacts, linked into --out (the service reads it from there)",
    )
    parser.add_argument("--lfw-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "lfw")
    parser.add_argument("--parity-faces", type=int, default=16)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raw = sys.argv[1:] if argv is None else argv
    command = "python -m models.train.fusion_export " + shlex.join(raw)
    projection = load_projection(args.projection)
    backbones = []
    for name, spec in zip(projection.backbones, args.backbone, strict=True):
        model_dir, _, card_file = spec.partition(":")
        backbones.append(load_backbone(name, Path(model_dir), card_file or "embedder.json"))
    model = compose_fused(backbones, projection)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_file = f"{args.name}.onnx"
    onnx.save(model, args.out / onnx_file)
    card = make_card(
        args.name, onnx_file, backbones, projection, args.threshold, command, sha256(args.out / onnx_file)
    )
    crops = parity_crops(backbones, args.lfw_dir, args.parity_faces)
    diff = parity(args.out / onnx_file, card, backbones, projection, crops)
    if diff >= MAX_ABS_DIFF:
        raise RuntimeError(f"fused ONNX differs from the reference by {diff:.2e} (limit {MAX_ABS_DIFF:.0e})")
    card["provenance"]["parity_max_abs_diff"] = diff
    card["provenance"]["parity_faces"] = len(crops[0])
    card_path = args.out / "embedder.json"
    existing = json.loads(card_path.read_text()) if card_path.is_file() else {}
    if existing.get("metrics"):
        card["metrics"] = existing["metrics"]
        card["threshold"] = existing.get("threshold", card["threshold"])
        for key in ("identify_threshold",):
            if key in existing:
                card[key] = existing[key]
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    # The head's own arrays beside the graph: the reference the parity test recomputes.
    if args.projection.resolve() != (args.out / "projection.npz").resolve():
        shutil.copyfile(args.projection, args.out / "projection.npz")
    detector_link = args.out / args.detector
    if not detector_link.exists():
        os.symlink(
            os.path.relpath(REPO_ROOT / "models" / "artifacts" / args.detector, args.out), detector_link
        )
    print(
        f"{args.out / onnx_file} ({(args.out / onnx_file).stat().st_size / 1e6:.1f} MB), card {card_path}, "
        f"parity max |Δ| {diff:.2e} over {len(crops[0])} LFW faces"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checkpoint → ONNX (dynamic batch) + the model card the service reads, proven against onnxruntime.

python -m models.train export runs/train/checkpoints/last.pt --out models/artifacts/finetuned --name sface_ft
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from numpy.typing import NDArray

from models.train.augment import crops_to_float, to_network_input
from models.train.backbones import EMBEDDING_DIM, EmbeddingNet, build_model, sface_base
from models.train.config import REPO_ROOT, TrainConfig
from service.runtime.model_card import InputSpec, ModelCard

logger = logging.getLogger(__name__)

OPSET = 17
MAX_ABS_DIFF = 1e-4
# Used until `python -m models.train evaluate --update-card` calibrates the threshold on LFW.
PROVISIONAL_THRESHOLD = 1.0


class ExportMismatch(RuntimeError):
    """onnxruntime and PyTorch disagree beyond the fp32 tolerance."""


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    card_path: Path
    max_abs_diff: float


def load_checkpoint(path: Path) -> tuple[EmbeddingNet, InputSpec, dict[str, Any]]:
    """Rebuild the network a checkpoint was trained with and load its weights (eval mode, CPU)."""
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    config = TrainConfig.model_validate(state["config"])
    model, spec = build_model(config)
    model.load_state_dict(state["model"])
    model.eval()
    return model, spec, state


def export_onnx(model: EmbeddingNet, spec: InputSpec, path: Path) -> None:
    dummy = torch.zeros(2, 3, spec.height, spec.width)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            input_names=[spec.input_name],
            output_names=[spec.output_name],
            dynamic_axes={spec.input_name: {0: "batch"}, spec.output_name: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    onnx.checker.check_model(onnx.load(str(path)))


def onnxruntime_difference(
    model: EmbeddingNet, spec: InputSpec, path: Path, crops: NDArray[np.uint8]
) -> float:
    """Max |ORT − PyTorch| over the embeddings of ``crops`` (N, H, W, 3), run as one dynamic batch."""
    inputs = to_network_input(crops_to_float(torch.from_numpy(crops)), spec)
    with torch.no_grad():
        expected = model(inputs).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run([spec.output_name], {spec.input_name: inputs.numpy()})[0]
    if actual.shape != (crops.shape[0], EMBEDDING_DIM):
        raise ExportMismatch(
            f"onnxruntime returned {actual.shape}, expected ({crops.shape[0]}, {EMBEDDING_DIM})"
        )
    return float(np.abs(actual - expected).max())


def git_commit(repo: Path = REPO_ROOT) -> str:
    """HEAD (with "-dirty" when the tree has changes), or "unknown" outside a repository / before a commit."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        )
        status = subprocess.run(
            ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def export(
    checkpoint: Path,
    out_dir: Path,
    name: str,
    command: str,
    threshold: float | None = None,
    sample_crops: NDArray[np.uint8] | None = None,
) -> ExportResult:
    """Write ``<out_dir>/<name>.onnx`` and ``<name>.json``; raise ExportMismatch when ORT ≠ PyTorch."""
    model, spec, state = load_checkpoint(checkpoint)
    config = TrainConfig.model_validate(state["config"])
    onnx_path = out_dir / f"{name}.onnx"
    export_onnx(model, spec, onnx_path)
    if sample_crops is None:
        rng = np.random.default_rng(0)
        sample_crops = rng.integers(0, 256, size=(5, spec.height, spec.width, 3), dtype=np.uint8)
    diff = onnxruntime_difference(model, spec, onnx_path, sample_crops)
    logger.info("onnxruntime vs PyTorch: max abs diff %.3g over %d crops", diff, sample_crops.shape[0])
    if not diff < MAX_ABS_DIFF:
        raise ExportMismatch(f"onnxruntime differs from PyTorch by {diff:.3g} (limit {MAX_ABS_DIFF:g})")

    provenance: dict[str, Any] = {
        "training_command": state["command"],
        "training_commands": state["commands"],
        "export_command": command,
        "git_commit": git_commit(),
        "exported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "steps": state["step"],
        "data": state["data"],
        "config": state["config"],
        "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "onnxruntime_max_abs_diff": diff,
        "threshold_source": "given" if threshold is not None else "provisional",
    }
    license_text = "Apache-2.0"
    if config.backbone == "sface":
        base_card, base_onnx = sface_base(config)
        provenance["base_model"] = {
            "name": base_card.name,
            "onnx_sha256": hashlib.sha256(base_onnx.read_bytes()).hexdigest(),
            "provenance": base_card.provenance,
        }
        license_text = base_card.license or license_text
        if threshold is None:
            threshold = base_card.threshold
    card = ModelCard(
        name=name,
        onnx_file=onnx_path.name,
        embedding_dim=EMBEDDING_DIM,
        normalized=True,
        input=spec,
        alignment="arcface_5pt_112",
        threshold=threshold if threshold is not None else PROVISIONAL_THRESHOLD,
        provenance=provenance,
        license=license_text,
    )
    card_path = out_dir / f"{name}.json"
    card.save(card_path)
    return ExportResult(onnx_path, card_path, diff)

"""Every training knob in one validated model; read from a JSON file, overridden by command-line flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "models" / "artifacts"
DEFAULT_LFW = REPO_ROOT.parent / "shared" / "data" / "lfw"


def parse_folds(value: object) -> list[int]:
    """ "1-10", "1,3,5-6", [1, 2] or "" → sorted 1-based fold numbers (as written in pairs.txt order)."""
    if value is None or value == "":
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list | tuple):
        return sorted({int(v) for v in value})
    if not isinstance(value, str):
        raise ValueError(f"folds must be a string like '1-5' or a list, got {value!r}")
    folds: set[int] = set()
    for part in value.replace(" ", "").split(","):
        if "-" in part:
            first, last = (int(x) for x in part.split("-", 1))
            folds.update(range(first, last + 1))
        elif part:
            folds.add(int(part))
    return sorted(folds)


class TrainConfig(BaseModel):
    """Defaults are those of the SFace fine-tuning run; tests override what they need."""

    model_config = ConfigDict(extra="forbid")

    # Data: a folder per identity (LFW: <root>/images/<person>/*.jpg, or <root>/<person>/*).
    data_root: Path = Field(DEFAULT_LFW, description="dataset root (LFW layout or one folder per identity)")
    cache_dir: Path = Field(REPO_ROOT / ".cache" / "aligned", description="aligned 112x112 crop cache")
    aligner: Literal["yunet", "prealigned"] = Field(
        "yunet", description="yunet: detect+align; prealigned: resize"
    )
    detector_model: Path = Field(
        ARTIFACTS / "yunet_2023mar_fp32.onnx", description="YuNet ONNX for alignment"
    )
    min_images: int = Field(2, ge=2, description="identities with fewer usable faces are dropped")
    max_identities: int | None = Field(None, ge=2, description="keep only the first N identities (sorted)")
    max_images_per_identity: int | None = Field(
        None, ge=2, description="use at most N images of an identity (the first, sorted); caps LFW's giants"
    )
    lfw_pairs: Path | None = Field(DEFAULT_LFW / "pairs.txt", description="pairs.txt defining the folds")
    holdout_folds: list[int] = Field(
        default_factory=list,
        description="1-based LFW folds whose people never enter training, e.g. '1-5' (evaluate on these)",
    )

    # Model.
    backbone: Literal["small_cnn", "sface"] = Field(
        "sface", description="small_cnn (tests) or sface (fine-tune)"
    )
    base_card: Path = Field(ARTIFACTS / "embedder.json", description="card of the model sface starts from")
    small_cnn_width: int = Field(16, ge=4, description="channels of the first small_cnn stage")
    freeze_bn_stats: bool | None = Field(
        None, description="keep BatchNorm running statistics fixed; default: yes for sface, no for small_cnn"
    )

    # Objective.
    loss: Literal["triplet", "softmax_ratio", "lifted"] = "triplet"
    miner: Literal["semihard", "batch_hard", "batch_all"] = Field("semihard", description="triplet loss only")
    margin: float = Field(0.2, gt=0.0, description="α: squared-distance margin (triplet), plain (lifted)")

    # Optimisation.
    identities_per_batch: int = Field(32, ge=2, description="P")
    images_per_identity: int = Field(4, ge=2, description="K")
    steps: int = Field(2000, ge=1)
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    warmup_steps: int = Field(100, ge=0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    grad_clip: float | None = Field(5.0, gt=0.0)

    # Augmentation (torch ops, on the training device).
    flip: bool = True
    max_zoom: float = Field(1.1, ge=1.0, description="random crops of 1/zoom of the side, resized back")
    max_shift: float = Field(0.04, ge=0.0, description="random translation, fraction of the side")
    color_jitter: float = Field(0.2, ge=0.0, description="brightness/contrast/saturation ± this")

    # Run.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bfloat16 autocast on CUDA (ignored on CPU)")
    threads: int = Field(0, ge=0, description="torch/onnxruntime CPU threads (0: library default)")
    keep_freed_memory: bool = Field(
        True, description="CPU: glibc keeps freed memory (SFace steps ~2x faster, ~1.5-2x the peak RSS)"
    )
    seed: int = 0
    out_dir: Path = Field(REPO_ROOT / "runs" / "train", description="run folder (checkpoints, metrics.csv)")
    checkpoint_every: int = Field(500, ge=1)
    resume: bool = Field(False, description="continue from out_dir/checkpoints/last.pt when present")
    tensorboard: bool = Field(False, description="also log to TensorBoard (needs the tensorboard package)")
    progress: bool = Field(True, description="show the tqdm progress bar")

    @field_validator("holdout_folds", mode="before")
    @classmethod
    def _folds(cls, value: object) -> list[int]:
        folds = parse_folds(value)
        if any(f < 1 for f in folds):
            raise ValueError("folds are numbered from 1")
        return folds

    @property
    def frozen_batchnorm(self) -> bool:
        return self.freeze_bn_stats if self.freeze_bn_stats is not None else self.backbone == "sface"

    @property
    def batch_size(self) -> int:
        return self.identities_per_batch * self.images_per_identity

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.model_dump_json())
        return data


def load_config(path: Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """A JSON config file (optional) with flag overrides on top; flags left unset are ``None``."""
    data: dict[str, Any] = json.loads(path.read_text()) if path is not None else {}
    data.update({key: value for key, value in overrides.items() if value is not None})
    return TrainConfig.model_validate(data)

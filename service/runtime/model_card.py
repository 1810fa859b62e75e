"""The model card: the one contract between models/ (which writes it) and service/ (which reads it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class InputSpec(BaseModel):
    """How an aligned crop becomes the network input: ``(pixel[channel_order] - mean) / std``."""

    model_config = ConfigDict(extra="forbid")

    width: int = 112
    height: int = 112
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "BGR"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    input_name: str = "input"
    output_name: str = "embedding"


class LfwResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    accuracy_mean: float
    accuracy_std: float
    roc_auc: float | None = None
    tar_at_far_1e3: float | None = None
    threshold_mean: float | None = None
    command: str = ""


class ModelCard(BaseModel):
    """Metadata shipped next to every embedding model (``<name>.json`` beside ``<name>.onnx``)."""

    model_config = ConfigDict(extra="allow")

    format_version: Literal[1] = 1
    name: str
    onnx_file: str
    embedding_dim: int = 128
    normalized: bool = True
    input: InputSpec = Field(default_factory=InputSpec)
    alignment: str = "arcface_5pt_112"
    # Calibrated default: squared L2 distance between unit embeddings, in [0, 4]. ``threshold`` is the
    # 1:1 verification threshold; ``identify_threshold`` the 1:N one (a target false-positive
    # identification rate at a reference gallery size, see ``metrics["openset"]``), None: use ``threshold``.
    threshold: float = Field(ge=0.0, le=4.0)
    identify_threshold: float | None = Field(default=None, ge=0.0, le=4.0)
    provenance: dict[str, Any] = Field(default_factory=dict)
    license: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        return cls.model_validate(json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2) + "\n")
        tmp.replace(path)

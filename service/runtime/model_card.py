"""The model card: the one contract between models/ (which writes it) and service/ (which reads it).

Two layouts:

- ``format_version: 1`` — one image input: ``input`` (an :class:`InputSpec`, with the graph's
  ``output_name`` inside it) and ``alignment`` (a template name of ``service.runtime.alignment``).
- ``format_version: 2`` — one or more image inputs, each its own aligned crop of the same face:
  ``inputs: [ModelInput, ...]`` (preprocessing + ``alignment`` per graph input) and a top-level
  ``output_name``. The embedder feeds all inputs in one session run.

:attr:`ModelCard.model_inputs` and :attr:`ModelCard.embedding_output` read both the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import InvalidModelCard

DEFAULT_ALIGNMENT = "arcface_5pt_112"


class Preprocessing(BaseModel):
    """How an aligned crop becomes a network input: ``(pixel[channel_order] - mean) / std``."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(default=112, gt=0)
    height: int = Field(default=112, gt=0)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "BGR"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    input_name: str = "input"


class InputSpec(Preprocessing):
    """A version-1 card's single input, which also names the graph output."""

    output_name: str = "embedding"


class ModelInput(Preprocessing):
    """One graph input of a version-2 card: its preprocessing and the alignment of its crop."""

    alignment: str = DEFAULT_ALIGNMENT


class LfwResult(BaseModel):
    model_config = ConfigDict(extra="allow")

    accuracy_mean: float
    accuracy_std: float
    roc_auc: float | None = None
    tar_at_far_1e3: float | None = None
    threshold_mean: float | None = None
    command: str = ""


_V1_ONLY = ("input", "alignment")
_V2_ONLY = ("inputs", "output_name")


class ModelCard(BaseModel):
    """Metadata shipped next to every embedding model (``<name>.json`` beside ``<name>.onnx``)."""

    model_config = ConfigDict(extra="allow")

    format_version: Literal[1, 2] = 1
    name: str
    onnx_file: str
    embedding_dim: int = 128
    normalized: bool = True
    # Version 1: one input. Filled with the historical defaults when a v1 card leaves them out.
    input: InputSpec | None = None
    alignment: str | None = None
    # Version 2: one entry per graph input, and the graph output carrying the embedding.
    inputs: list[ModelInput] | None = None
    output_name: str | None = None
    # Calibrated default: squared L2 distance between unit embeddings, in [0, 4]. ``threshold`` is the
    # 1:1 verification threshold; ``identify_threshold`` the 1:N one (a target false-positive
    # identification rate at a reference gallery size, see ``metrics["openset"]``), None: use ``threshold``.
    threshold: float = Field(ge=0.0, le=4.0)
    identify_threshold: float | None = Field(default=None, ge=0.0, le=4.0)
    provenance: dict[str, Any] = Field(default_factory=dict)
    license: str = ""
    metrics: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _layout_matches_version(self) -> Self:
        if self.format_version == 1:
            stray = [f for f in _V2_ONLY if getattr(self, f) is not None]
            if stray:
                raise ValueError(f"format_version 1 card has version-2 fields {stray}; set format_version 2")
            if self.input is None:
                self.input = InputSpec()
            if self.alignment is None:
                self.alignment = DEFAULT_ALIGNMENT
            return self
        stray = [f for f in _V1_ONLY if getattr(self, f) is not None]
        if stray:
            raise ValueError(
                f"format_version 2 card has version-1 fields {stray}; describe each input in 'inputs'"
            )
        if not self.inputs:
            raise ValueError("format_version 2 card needs a non-empty 'inputs' list")
        if not self.output_name:
            raise ValueError("format_version 2 card needs a top-level 'output_name'")
        names = [spec.input_name for spec in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"input names must be distinct, got {names}")
        return self

    @property
    def model_inputs(self) -> list[ModelInput]:
        """Every image input, in card order (a v1 card's single input included)."""
        if self.format_version == 2:
            assert self.inputs is not None
            return list(self.inputs)
        assert self.input is not None
        assert self.alignment is not None
        fields = self.input.model_dump(exclude={"output_name"})
        return [ModelInput(**fields, alignment=self.alignment)]

    @property
    def embedding_output(self) -> str:
        """The graph output that carries the embedding."""
        if self.format_version == 2:
            assert self.output_name is not None
            return self.output_name
        assert self.input is not None
        return self.input.output_name

    @property
    def single_input(self) -> InputSpec:
        """The input of a one-input card as an InputSpec (for tools that handle one input only)."""
        inputs = self.model_inputs
        if len(inputs) != 1:
            raise ValueError(f"{self.name} has {len(inputs)} inputs; this needs a single-input model")
        fields = inputs[0].model_dump(exclude={"alignment"})
        return InputSpec(**fields, output_name=self.embedding_output)

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        """Read and validate a card; :class:`InvalidModelCard` says which file and what is wrong."""
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidModelCard(f"model card {path}: {exc}") from exc
        except ValidationError as exc:
            raise InvalidModelCard(f"model card {path} is invalid: {exc}") from exc

    def save(self, path: Path) -> None:
        unused = _V2_ONLY if self.format_version == 1 else _V1_ONLY
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2, exclude=set(unused)) + "\n")
        tmp.replace(path)

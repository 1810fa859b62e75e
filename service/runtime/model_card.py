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

import itertools
import json
import math
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


class LadderStep(BaseModel):
    """The identify threshold measured for one gallery size (people enrolled)."""

    model_config = ConfigDict(extra="allow")  # spread, held-out figures: kept, not read

    gallery_size: int = Field(gt=0)
    threshold: float = Field(ge=0.0, le=4.0)


class IdentifyLadder(BaseModel):
    """Identify thresholds at a ladder of gallery sizes, measured with ``enroll_count`` photos per person."""

    model_config = ConfigDict(extra="allow")

    enroll_count: int = Field(gt=0)
    steps: list[LadderStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _sizes_increase(self) -> Self:
        sizes = [step.gallery_size for step in self.steps]
        if any(b <= a for a, b in itertools.pairwise(sizes)):
            raise ValueError(f"ladder gallery sizes must increase strictly, got {sizes}")
        return self

    @property
    def reach(self) -> int:
        return self.steps[-1].gallery_size

    def at(self, subjects: int) -> float:
        """The threshold for a gallery of ``subjects`` people (log-size interpolation, clamped)."""
        first, last = self.steps[0], self.steps[-1]
        if subjects <= first.gallery_size:
            return first.threshold
        if subjects >= last.gallery_size:
            return last.threshold
        for low, high in itertools.pairwise(self.steps):
            if subjects <= high.gallery_size:
                share = math.log(subjects / low.gallery_size) / math.log(high.gallery_size / low.gallery_size)
                return low.threshold + share * (high.threshold - low.threshold)
        raise AssertionError("unreachable: subjects lies below the last step")


class IdentifyThresholdBySize(BaseModel):
    """The identify threshold for one target FPIR by gallery size (``models.evaluate_openset``).

    A stranger is named when *some* enrolled face lies close enough, and the more people (and photos
    of them) are enrolled the likelier one is a look-alike: the threshold giving the same stranger
    rate tightens as a gallery grows. One ladder per photos-per-person count; :meth:`at` reads each at
    the collection's number of subjects (linear in log size between steps, clamped at the ends) and
    interpolates between them at its mean photos per subject (linear in log photos, clamped). Beyond
    the sizes a ladder was measured at (LFW has few people with many photos), it follows the ladder
    measured furthest, shifted to meet its own last step.
    """

    model_config = ConfigDict(extra="allow")

    target_fpir: float = Field(gt=0.0, lt=1.0)
    ladders: list[IdentifyLadder] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_ladder_per_count(self) -> Self:
        counts = [ladder.enroll_count for ladder in self.ladders]
        if any(b <= a for a, b in itertools.pairwise(counts)):
            raise ValueError(f"ladders must have increasing enroll_count, got {counts}")
        return self

    def _read(self, ladder: IdentifyLadder, subjects: int) -> float:
        furthest = max(self.ladders, key=lambda each: each.reach)
        if subjects <= ladder.reach or ladder is furthest:
            return ladder.at(subjects)
        return ladder.steps[-1].threshold + furthest.at(subjects) - furthest.at(ladder.reach)

    def at(self, subjects: int, faces: int) -> float:
        """The threshold for a gallery of ``subjects`` people holding ``faces`` enrolled faces."""
        low, high = self.ladders[0], self.ladders[-1]
        photos = min(max(faces / subjects if subjects > 0 else 0.0, low.enroll_count), high.enroll_count)
        for below, above in itertools.pairwise(self.ladders):
            if below.enroll_count <= photos <= above.enroll_count:
                share = math.log(photos / below.enroll_count) / math.log(
                    above.enroll_count / below.enroll_count
                )
                low_value, high_value = self._read(below, subjects), self._read(above, subjects)
                return low_value + share * (high_value - low_value)
        return self._read(low, subjects)  # a single ladder


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
    # ``identify_threshold_by_size`` (when present) replaces ``identify_threshold`` as the service's
    # identify default: the same target FPIR at the collection's own number of subjects.
    threshold: float = Field(ge=0.0, le=4.0)
    identify_threshold: float | None = Field(default=None, ge=0.0, le=4.0)
    identify_threshold_by_size: IdentifyThresholdBySize | None = None
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

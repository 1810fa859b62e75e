"""Aligned crops → unit-length embeddings with the ONNX model a model card describes.

The card may describe one input (SFace, dlib's ResNet) or several (a fused model taking one crop per
alignment); every input is preprocessed as its card entry says and all are fed in one session run.
Start-up refuses a card that does not match its graph (:class:`InvalidModelCard`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from service.errors import InvalidModelCard
from service.runtime.alignment import AlignmentTemplate, get_alignment
from service.runtime.detector import load_detector
from service.runtime.model_card import ModelCard, ModelInput
from service.runtime.onnx_session import ExecutionProvider, create_session
from service.runtime.types import CropBatch, Embeddings, crop_arrays
from service.vectors import as_unit_rows

__all__ = ["OnnxEmbedder", "load_detector", "load_embedder"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Feed:
    """One graph input: its name, the crop it takes and how that crop becomes a tensor."""

    name: str
    alignment: AlignmentTemplate  # sized to the input
    bgr: bool
    nchw: bool
    mean: NDArray[np.float32]
    inv_std: NDArray[np.float32]

    @property
    def identity(self) -> bool:
        return bool(np.all(self.mean == 0) and np.all(self.inv_std == 1))

    def tensor(self, crops: NDArray[np.uint8]) -> NDArray[np.float32]:
        width, height = self.alignment.size
        if crops.ndim != 4 or crops.shape[1:] != (height, width, 3):
            raise ValueError(
                f"input {self.name!r}: expected (N, {height}, {width}, 3) crops, got {crops.shape}"
            )
        pixels = crops[..., ::-1] if self.bgr else crops
        batch = pixels.astype(np.float32)
        if not self.identity:
            batch = (batch - self.mean) * self.inv_std
        if self.nchw:
            batch = batch.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(batch)


def _expected_shape(spec: ModelInput) -> tuple[int, int, int]:
    return (3, spec.height, spec.width) if spec.layout == "NCHW" else (spec.height, spec.width, 3)


def _check_input(card: ModelCard, spec: ModelInput, node: ort.NodeArg) -> None:
    where = f"model card {card.name!r} ({card.onnx_file}), input {spec.input_name!r}"
    if node.type != "tensor(float)":
        raise InvalidModelCard(f"{where}: the graph wants {node.type}, the service feeds tensor(float)")
    shape = list(node.shape)
    if len(shape) != 4:
        raise InvalidModelCard(f"{where}: the graph input has shape {shape}, expected a 4-d image batch")
    expected = _expected_shape(spec)
    for axis, (got, want) in enumerate(zip(shape[1:], expected, strict=True), start=1):
        if isinstance(got, int) and got != want:
            raise InvalidModelCard(
                f"{where}: the card says {spec.layout} {spec.width}x{spec.height} (axis {axis} = {want}) "
                f"but the graph input has shape {shape}"
            )


def feeds_for(card: ModelCard, session: ort.InferenceSession) -> tuple[_Feed, ...]:
    """Check the card against the graph and build the per-input preprocessing; InvalidModelCard otherwise."""
    graph_inputs = {node.name: node for node in session.get_inputs()}
    graph_outputs = {node.name: node for node in session.get_outputs()}
    specs = card.model_inputs
    described = {spec.input_name for spec in specs}
    where = f"model card {card.name!r} ({card.onnx_file})"
    unknown = [spec.input_name for spec in specs if spec.input_name not in graph_inputs]
    if unknown:
        raise InvalidModelCard(
            f"{where}: inputs {unknown} are not in the graph (its inputs: {sorted(graph_inputs)})"
        )
    missing = sorted(set(graph_inputs) - described)
    if missing:
        raise InvalidModelCard(f"{where}: graph inputs {missing} are not described by the card")
    output = card.embedding_output
    if output not in graph_outputs:
        raise InvalidModelCard(
            f"{where}: no output {output!r} in the graph (its outputs: {sorted(graph_outputs)})"
        )
    out_dim = list(graph_outputs[output].shape)[-1:]
    if out_dim and isinstance(out_dim[0], int) and out_dim[0] != card.embedding_dim:
        raise InvalidModelCard(
            f"{where}: output {output!r} is {out_dim[0]}-d, the card says {card.embedding_dim}"
        )
    feeds = []
    for spec in specs:
        _check_input(card, spec, graph_inputs[spec.input_name])
        feeds.append(
            _Feed(
                name=spec.input_name,
                alignment=get_alignment(spec.alignment).at_size((spec.width, spec.height)),
                bgr=spec.channel_order == "BGR",
                nchw=spec.layout == "NCHW",
                mean=np.asarray(spec.mean, dtype=np.float32),
                inv_std=1.0 / np.asarray(spec.std, dtype=np.float32),
            )
        )
    return tuple(feeds)


class OnnxEmbedder:
    """Embedder protocol over an onnxruntime session; preprocessing follows the card's inputs exactly."""

    def __init__(self, card: ModelCard, session: ort.InferenceSession) -> None:
        self._feeds = feeds_for(card, session)
        self._session = session
        self._card = card
        self._output_name = card.embedding_output

    @property
    def dim(self) -> int:
        return self._card.embedding_dim

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the first input's crop."""
        return self._feeds[0].alignment.size

    @property
    def alignments(self) -> tuple[AlignmentTemplate, ...]:
        """The crop each input takes, in card order, sized to the input."""
        return tuple(feed.alignment for feed in self._feeds)

    @property
    def session(self) -> ort.InferenceSession:
        return self._session

    @property
    def card(self) -> ModelCard:
        return self._card

    def embed(self, crops: CropBatch) -> Embeddings:
        """One (N, H, W, 3) RGB uint8 array per input (a bare array for one input) → (N, dim) unit
        float32 vectors, any N (0 included)."""
        arrays = crop_arrays(crops)
        if len(arrays) != len(self._feeds):
            raise ValueError(f"{self._card.name} takes {len(self._feeds)} crops per face, got {len(arrays)}")
        count = len(arrays[0])
        if count == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        feed = {f.name: f.tensor(a) for f, a in zip(self._feeds, arrays, strict=True)}
        raw = self._session.run([self._output_name], feed)[0]
        vectors = np.asarray(raw, dtype=np.float32).reshape(count, -1)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"model returned {vectors.shape[1]}-d vectors, the card says {self.dim}")
        return as_unit_rows(vectors, self.dim)


def load_embedder(
    model_dir: Path,
    card_file: str,
    provider: ExecutionProvider,
    intra_op_threads: int,
    cpu_graph_rewrites: bool = True,
) -> tuple[OnnxEmbedder, ModelCard]:
    """Read the card, open its ONNX file on the best provider, and check the two agree."""
    card = ModelCard.load(model_dir / card_file)
    for spec in card.model_inputs:  # an unknown alignment fails before the (slow) session is built
        get_alignment(spec.alignment)
    session = create_session(model_dir / card.onnx_file, provider, intra_op_threads, cpu_graph_rewrites)
    embedder = OnnxEmbedder(card, session)
    logger.info(
        "embedder %s: %d-d, inputs %s, threshold d²=%.4f",
        card.name,
        card.embedding_dim,
        [f"{a.name}@{a.size[0]}x{a.size[1]}" for a in embedder.alignments],
        card.threshold,
    )
    return embedder, card

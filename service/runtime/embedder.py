"""Aligned crops → unit-length embeddings with the ONNX model a model card describes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from service.runtime.detector import load_detector
from service.runtime.model_card import ModelCard
from service.runtime.onnx_session import ExecutionProvider, create_session
from service.runtime.types import Embeddings

__all__ = ["OnnxEmbedder", "load_detector", "load_embedder"]

logger = logging.getLogger(__name__)


class OnnxEmbedder:
    """Embedder protocol over an onnxruntime session; preprocessing follows ``card.input`` exactly."""

    def __init__(self, card: ModelCard, session: ort.InferenceSession) -> None:
        spec = card.input
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if spec.input_name not in inputs:
            raise ValueError(f"{card.onnx_file}: no input {spec.input_name!r} (has {sorted(inputs)})")
        if spec.output_name not in outputs:
            raise ValueError(f"{card.onnx_file}: no output {spec.output_name!r} (has {sorted(outputs)})")
        self._session = session
        self._card = card
        self._input_name = spec.input_name
        self._output_name = spec.output_name
        self._bgr = spec.channel_order == "BGR"
        self._nchw = spec.layout == "NCHW"
        self._mean = np.asarray(spec.mean, dtype=np.float32)
        self._inv_std = 1.0 / np.asarray(spec.std, dtype=np.float32)
        self._identity = bool(np.all(self._mean == 0) and np.all(self._inv_std == 1))
        self._size = (spec.width, spec.height)

    @property
    def dim(self) -> int:
        return self._card.embedding_dim

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    @property
    def session(self) -> ort.InferenceSession:
        return self._session

    @property
    def card(self) -> ModelCard:
        return self._card

    def embed(self, crops: NDArray[np.uint8]) -> Embeddings:
        """(N, H, W, 3) RGB uint8 → (N, dim) float32 unit vectors, any N (0 included)."""
        width, height = self._size
        if crops.ndim != 4 or crops.shape[1:] != (height, width, 3):
            raise ValueError(f"expected (N, {height}, {width}, 3) crops, got {crops.shape}")
        if crops.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        pixels = crops[..., ::-1] if self._bgr else crops
        batch = pixels.astype(np.float32)
        if not self._identity:
            batch = (batch - self._mean) * self._inv_std
        if self._nchw:
            batch = batch.transpose(0, 3, 1, 2)
        raw = self._session.run([self._output_name], {self._input_name: np.ascontiguousarray(batch)})[0]
        vectors = np.asarray(raw, dtype=np.float32).reshape(crops.shape[0], -1)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"model returned {vectors.shape[1]}-d vectors, the card says {self.dim}")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def load_embedder(
    model_dir: Path,
    card_file: str,
    provider: ExecutionProvider,
    intra_op_threads: int,
    cpu_graph_rewrites: bool = True,
) -> tuple[OnnxEmbedder, ModelCard]:
    """Read the card, open its ONNX file on the best provider, and check the two agree."""
    card = ModelCard.load(model_dir / card_file)
    session = create_session(model_dir / card.onnx_file, provider, intra_op_threads, cpu_graph_rewrites)
    logger.info("embedder %s: %d-d, threshold d²=%.4f", card.name, card.embedding_dim, card.threshold)
    return OnnxEmbedder(card, session), card

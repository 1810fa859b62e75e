"""One place that decides how an ONNX model runs: CUDA when asked for and present, else the CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import onnxruntime as ort

logger = logging.getLogger(__name__)

ExecutionProvider = Literal["auto", "cpu", "cuda"]
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def _options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Requests are already parallel (thread pool + batcher); one model run should not fan out
    # across operators as well, only inside them. 0 lets onnxruntime use the physical cores.
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    options.intra_op_num_threads = intra_op_threads
    # The detector and embedder sessions share the cores with the worker pool; pool threads that
    # spin-wait after a run would steal them from the other session.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def create_session(path: Path, provider: ExecutionProvider, intra_op_threads: int) -> ort.InferenceSession:
    """An InferenceSession on CUDA when wanted and available, falling back to the CPU on any CUDA failure."""
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    wants_cuda = provider in ("auto", "cuda")
    has_cuda = CUDA_PROVIDER in ort.get_available_providers()
    if provider == "cuda" and not has_cuda:
        logger.warning(
            "CUDA requested for %s but onnxruntime has no %s; using the CPU", path.name, CUDA_PROVIDER
        )
    if wants_cuda and has_cuda:
        try:
            session = ort.InferenceSession(
                str(path), sess_options=_options(intra_op_threads), providers=[CUDA_PROVIDER, CPU_PROVIDER]
            )
        except Exception:  # onnxruntime raises bare RuntimeError/Fail for missing CUDA libraries
            logger.warning("CUDA session for %s failed; falling back to the CPU", path.name, exc_info=True)
        else:
            logger.info("%s runs on %s", path.name, active_provider(session))
            return session
    session = ort.InferenceSession(
        str(path), sess_options=_options(intra_op_threads), providers=[CPU_PROVIDER]
    )
    logger.info("%s runs on %s", path.name, active_provider(session))
    return session


def active_provider(session: ort.InferenceSession) -> str:
    """The provider onnxruntime bound first (it silently drops CUDA when its libraries are missing)."""
    providers: list[str] = session.get_providers()
    return providers[0] if providers else CPU_PROVIDER

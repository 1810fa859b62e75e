"""One place that decides how an ONNX model runs: CUDA when asked for and present, else the CPU."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Literal

import onnx
import onnxruntime as ort

from service.runtime.glibc import heap_trimmer
from service.runtime.graph_rewrite import rewrite_prelu

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


def create_session(
    path: Path, provider: ExecutionProvider, intra_op_threads: int, cpu_graph_rewrites: bool = True
) -> ort.InferenceSession:
    """An InferenceSession on CUDA when wanted and available, falling back to the CPU on any CUDA failure.

    On the CPU the graph first goes through the exact rewrites of ``graph_rewrite`` unless
    ``cpu_graph_rewrites`` is off (the ONNX file as it is, for comparison and as an escape hatch).
    """
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
            if active_provider(session) == CUDA_PROVIDER:
                logger.info("%s runs on %s", path.name, CUDA_PROVIDER)
                return session
            logger.warning("onnxruntime bound %s to the CPU although CUDA was asked for", path.name)
    if cpu_graph_rewrites:
        session = _rewritten_cpu_session(path, intra_op_threads)
        _return_freed_memory()  # the Python-side copy of the graph is garbage now
    else:
        session = _cpu_session(path, intra_op_threads)
    logger.info("%s runs on %s", path.name, active_provider(session))
    return session


def _rewritten_cpu_session(path: Path, intra_op_threads: int) -> ort.InferenceSession:
    """Rewritten in memory, then read back through a temporary file rather than bytes: onnxruntime
    keeps less of a model read from a path (~35 MiB for SFace). Without a writable temp dir
    (read-only containers), from bytes; a graph that cannot be re-serialised runs as shipped."""
    model = onnx.load(str(path))
    count = rewrite_prelu(model)
    if count == 0:
        return _cpu_session(path, intra_op_threads)
    logger.info("%s: %d PRelu rewritten as s·x + (1-s)·Relu(x) for the CPU provider", path.name, count)
    try:
        with tempfile.TemporaryDirectory(prefix="faces-onnx-") as tmp:
            rewritten = Path(tmp) / path.name
            onnx.save_model(model, str(rewritten))
            return _cpu_session(rewritten, intra_op_threads)
    except ValueError as exc:  # e.g. a graph past protobuf's 2 GB
        logger.warning("%s: CPU rewrite skipped (%s)", path.name, exc)
        return _cpu_session(path, intra_op_threads)
    except OSError as exc:
        logger.warning(
            "no writable temp dir for the rewritten %s (%s); loading it from memory", path.name, exc
        )
    return ort.InferenceSession(
        model.SerializeToString(), sess_options=_options(intra_op_threads), providers=[CPU_PROVIDER]
    )


def _cpu_session(path: Path, intra_op_threads: int) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), sess_options=_options(intra_op_threads), providers=[CPU_PROVIDER])


def _return_freed_memory() -> None:
    """glibc keeps freed heap memory for reuse; once at start-up, give the model loading's back."""
    trim = heap_trimmer()
    if trim is not None:  # None: not glibc (e.g. musl), or not Linux
        trim()


def active_provider(session: ort.InferenceSession) -> str:
    """The provider onnxruntime bound first (it silently drops CUDA when its libraries are missing)."""
    providers: list[str] = session.get_providers()
    return providers[0] if providers else CPU_PROVIDER

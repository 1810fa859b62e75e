"""Throughput of the face front end on real LFW photos: detect+align+embed and embed-only, batch 1 and 32.

    python -m bench.bench_pipeline [--images 256] [--threads 0] [--provider cpu]

Decoding is excluded (done once up front); detection always runs one image at a time, the batch size
applies to the embedder. Prints a table and writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray
from tqdm import tqdm

from service.runtime.analyzer import AnalyzedFace, FaceAnalyzer
from service.runtime.detector import load_detector
from service.runtime.embedder import OnnxEmbedder, load_embedder
from service.runtime.imaging import decode_image
from service.runtime.onnx_session import ExecutionProvider, active_provider
from service.runtime.quality import QualityConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LFW = REPO_ROOT.parent / "shared" / "data" / "lfw"
DEFAULT_OUT = REPO_ROOT / "bench" / "results" / "pipeline.json"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pick_images(lfw_dir: Path, count: int) -> list[Path]:
    """An evenly spread, deterministic sample of LFW (many people, not one person's photos)."""
    paths = sorted((lfw_dir / "images").glob("*/*.jpg"))
    if len(paths) < count:
        raise SystemExit(f"only {len(paths)} images under {lfw_dir}")
    step = len(paths) / count
    return [paths[int(i * step)] for i in range(count)]


def timed(run: Callable[[], int], repeats: int) -> tuple[float, int]:
    """Best-of-``repeats`` wall time of ``run`` (returns images processed); the first call warms up."""
    run()
    best = float("inf")
    processed = 0
    for _ in range(repeats):
        start = time.perf_counter()
        processed = run()
        best = min(best, time.perf_counter() - start)
    return best, processed


def stack_crops(faces: list[AnalyzedFace]) -> tuple[NDArray[np.uint8], ...]:
    """One (N, H, W, 3) array per model input (a multi-input model takes one crop per alignment)."""
    return tuple(np.stack(per_input) for per_input in zip(*(face.crops for face in faces), strict=True))


def pipeline_run(
    images: list[NDArray[np.uint8]], analyzer: FaceAnalyzer, embedder: OnnxEmbedder, batch: int
) -> Callable[[], int]:
    def run() -> int:
        pending: list[AnalyzedFace] = []
        done = 0
        for image in images:
            faces = analyzer.analyze(image, max_faces=1)
            if faces:
                pending.append(faces[0])
            if len(pending) >= batch:
                embedder.embed(stack_crops(pending))
                pending.clear()
            done += 1
        if pending:
            embedder.embed(stack_crops(pending))
        return done

    return run


def embed_run(
    crops: NDArray[np.uint8] | tuple[NDArray[np.uint8], ...], embedder: OnnxEmbedder, batch: int
) -> Callable[[], int]:
    arrays = (crops,) if isinstance(crops, np.ndarray) else crops

    def run() -> int:
        count = len(arrays[0])
        for start in range(0, count, batch):
            embedder.embed(tuple(a[start : start + batch] for a in arrays))
        return count

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW)
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models" / "artifacts")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    parser.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    provider: ExecutionProvider = args.provider
    load_at_start = os.getloadavg()[0]

    embedder, card = load_embedder(args.model_dir, "embedder.json", provider, args.threads)
    detector = load_detector(args.model_dir / "yunet_2023mar_fp32.onnx", provider, args.threads, 0.6, 640)
    analyzer = FaceAnalyzer(detector, embedder.alignments, QualityConfig())
    paths = pick_images(args.lfw_dir, args.images)
    images = [
        decode_image(p.read_bytes(), max_pixels=40_000_000) for p in tqdm(paths, desc="decode", unit="img")
    ]
    crops = stack_crops([faces[0] for image in images if (faces := analyzer.analyze(image, max_faces=1))])

    rows: list[dict[str, Any]] = []
    cases = [
        ("detect+align+embed", 1, pipeline_run(images, analyzer, embedder, 1)),
        ("detect+align+embed", 32, pipeline_run(images, analyzer, embedder, 32)),
        ("embed-only", 1, embed_run(crops, embedder, 1)),
        ("embed-only", 32, embed_run(crops, embedder, 32)),
    ]
    for stage, batch, run in tqdm(cases, desc="bench", unit="case"):
        seconds, processed = timed(run, args.repeats)
        rows.append(
            {
                "stage": stage,
                "batch": batch,
                "images": processed,
                "seconds": round(seconds, 3),
                "images_per_s": round(processed / seconds, 1),
                "ms_per_image": round(1000 * seconds / processed, 2),
            }
        )

    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.bench_pipeline " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": {
            "cpu": cpu_model(),
            "logical_cpus": os.cpu_count(),
            # The 2-core CI box is shared: a load above the core count means the numbers are pessimistic.
            "load_average_1m_at_start": round(load_at_start, 2),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
            "onnxruntime": ort.__version__,
            "embedder_provider": active_provider(embedder.session),
            "detector_provider": active_provider(detector.session),
            "intra_op_threads": args.threads,
        },
        "models": {"embedder": card.onnx_file, "detector": "yunet_2023mar_fp32.onnx"},
        "input": f"{len(images)} LFW images (250x250 JPEG, decoded beforehand), {len(crops[0])} with a face",
        "best_of": args.repeats,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"{result['device']['cpu']} ({os.cpu_count()} CPUs), onnxruntime {ort.__version__}, "
        f"{result['device']['embedder_provider']}"
    )
    print(f"{'stage':<20} {'batch':>5} {'images/s':>10} {'ms/image':>10}")
    for row in rows:
        print(
            f"{row['stage']:<20} {row['batch']:>5} {row['images_per_s']:>10.1f} {row['ms_per_image']:>10.2f}"
        )
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

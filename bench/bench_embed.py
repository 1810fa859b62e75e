"""Embedding throughput, the service's pipeline beside ``face_recognition`` (dlib), same images, same run.

Our rows reuse ``bench.bench_pipeline`` (the faces helper's pipeline benchmark: its image sample,
its timed runs); this script adds the dlib rows on the very same decoded images and the ratios.
Like ``bench_pipeline``, decoding is excluded and the largest face of each image is used:

* detect+align+embed — ours: YuNet + 5-point alignment + quality (``FaceAnalyzer``) then the ONNX
  embedder; dlib: ``face_locations`` (HOG) + ``face_encodings`` of the largest box.
* embed-only — ours: pre-aligned crops through the embedder, and (like for like with dlib) align +
  embed from YuNet's landmarks; dlib: ``face_encodings(known_face_locations=...)``, which includes
  its 5-point landmark fit and chip extraction.

On the CPU, ours also runs with the ONNX graph exactly as shipped (``FACES_CPU_GRAPH_REWRITES=false``,
PRelu kept): the "before" rows of the PRelu rewrite in ``service.runtime.graph_rewrite``.

Other card-described models (``--extra-model-dir``, e.g. dlib's ResNet as ONNX or a fused
several-input model) get their own "ours, <model>" rows on the same images, each with its own
alignment(s) from its card, and their speed relative to the default model in the notes.

    python -m bench.bench_embed                            # 128 LFW images
    python -m bench.bench_embed --images 512 --device gpu  # ONNX Runtime on CUDA (dlib stays on CPU)
    python -m bench.bench_embed --no-dlib --extra-model-dir models/artifacts/dlib_resnet_v1 \
        --out models/artifacts/dlib_resnet_v1/bench_embed.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from bench.bench_pipeline import embed_run, pick_images, pipeline_run, stack_crops, timed
from bench.common import DEFAULT_LFW_ROOT, Report, Table, finish_report, fmt, start_report
from bench.dlib_baseline import Box, DlibBaseline, baseline_versions, dlib_build
from service.runtime.analyzer import FaceAnalyzer
from service.runtime.embedder import OnnxEmbedder, load_detector, load_embedder
from service.runtime.imaging import decode_image
from service.runtime.onnx_session import ExecutionProvider, active_provider
from service.runtime.quality import QualityConfig
from service.settings import Settings

BEFORE = "ours, PRelu as shipped (before)"


@dataclass(frozen=True, slots=True)
class Throughput:
    pipeline: str
    stage: str
    batch: int
    images: int
    seconds: float
    threads: str

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


def largest(boxes: list[Box]) -> list[Box]:
    """The biggest box only (``bench_pipeline`` embeds the largest face per image)."""
    if not boxes:
        return []
    return [max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))]


def align_embed_run(
    images: list[NDArray[np.uint8]], landmarks: list[NDArray[np.float32] | None], embedder: OnnxEmbedder
) -> Callable[[], int]:
    """Align from known landmarks and embed, one image per call (dlib's known-locations case)."""

    def run() -> int:
        done = 0
        for image, points in zip(images, landmarks, strict=True):
            if points is not None:
                embedder.embed(tuple(a.align(image, points)[None] for a in embedder.alignments))
                done += 1
        return done

    return run


def interleaved(
    run_default: Callable[[], int], run_other: Callable[[], int], rounds: int
) -> tuple[float, int, float]:
    """``run_other`` timed in alternation with ``run_default`` after one warm-up each: its median
    time, images per run, and the median over rounds of (other time / default time) per image."""
    default_count = run_default()
    run_other()
    times: list[float] = []
    ratios: list[float] = []
    processed = 0
    for _ in range(rounds):
        start = time.perf_counter()
        default_count = run_default()
        default_s = time.perf_counter() - start
        start = time.perf_counter()
        processed = run_other()
        other_s = time.perf_counter() - start
        times.append(other_s)
        ratios.append((other_s / processed) / (default_s / default_count))
    return float(np.median(times)), processed, float(np.median(ratios))


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW_ROOT)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="ONNX Runtime provider")
    parser.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = all cores)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after one warm-up; best kept")
    parser.add_argument("--no-dlib", action="store_true", help="skip the face_recognition rows")
    parser.add_argument(
        "--extra-model-dir",
        type=Path,
        action="append",
        default=[],
        help="another model directory (embedder.json + ONNX) to time on the same images; repeatable",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="write the JSON here instead of bench/results/bench_embed.json"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    report = start_report("bench_embed", argv)
    settings = Settings()
    provider: ExecutionProvider = "cuda" if args.device == "gpu" else "cpu"
    embedder, _card = load_embedder(settings.model_dir, settings.embedder_card, provider, args.threads)
    detector = load_detector(
        settings.model_dir / settings.detector_model,
        provider,
        args.threads,
        settings.detector_score_threshold,
        settings.detection_max_side,
    )
    analyzer = FaceAnalyzer(detector, embedder.alignments, QualityConfig())
    paths = pick_images(args.lfw_dir, args.images)
    images = [decode_image(p.read_bytes(), max_pixels=settings.max_image_pixels) for p in paths]
    n = len(images)
    first_faces = [analyzer.analyze(image, max_faces=1) for image in images]
    landmarks = [faces[0].face.landmarks if faces else None for faces in first_faces]
    crops = stack_crops([faces[0] for faces in first_faces if faces])
    ours = f"ORT {args.threads or 'all'} ({active_provider(embedder.session)})"
    plain: OnnxEmbedder | None = None
    if provider == "cpu":
        plain, _ = load_embedder(
            settings.model_dir, settings.embedder_card, provider, args.threads, cpu_graph_rewrites=False
        )

    results: list[Throughput] = []

    def record(pipeline: str, stage: str, batch: int, run: Callable[[], int], threads: str) -> None:
        seconds, processed = timed(run, args.repeats)
        results.append(Throughput(pipeline, stage, batch, processed, seconds, threads))
        print(f"{pipeline} {stage} batch {batch}: {processed / seconds:.1f} images/s", flush=True)

    for batch in (1, 32):
        record("ours", "detect+align+embed", batch, pipeline_run(images, analyzer, embedder, batch), ours)
    record("ours", "align+embed (known landmarks)", 1, align_embed_run(images, landmarks, embedder), ours)
    for batch in (1, 32):
        record("ours", "embed-only (aligned crops)", batch, embed_run(crops, embedder, batch), ours)
    if plain is not None:
        # The detector has no PRelu: only the embedder differs between these rows and the ones above.
        record(BEFORE, "detect+align+embed", 1, pipeline_run(images, analyzer, plain, 1), ours)
        for batch in (1, 32):
            record(BEFORE, "embed-only (aligned crops)", batch, embed_run(crops, plain, batch), ours)
    # Other models: each stage timed in alternation with the default model's same stage (A, B, A, B…),
    # so a busy machine slows both alike; the ratio is the median of the per-round ratios.
    ratio_notes: list[str] = []
    for model_dir in args.extra_model_dir:
        other, other_card = load_embedder(model_dir, "embedder.json", provider, args.threads)
        other_analyzer = FaceAnalyzer(detector, other.alignments, QualityConfig())
        other_crops = stack_crops(
            [f[0] for image in images if (f := other_analyzer.analyze(image, max_faces=1))]
        )
        name = f"ours, {other_card.name}"
        pairs: list[tuple[str, int, Callable[[], int], Callable[[], int]]] = [
            *(
                (
                    "detect+align+embed",
                    b,
                    pipeline_run(images, analyzer, embedder, b),
                    pipeline_run(images, other_analyzer, other, b),
                )
                for b in (1, 32)
            ),
            (
                "align+embed (known landmarks)",
                1,
                align_embed_run(images, landmarks, embedder),
                align_embed_run(images, landmarks, other),
            ),
            *(
                (
                    "embed-only (aligned crops)",
                    b,
                    embed_run(crops, embedder, b),
                    embed_run(other_crops, other, b),
                )
                for b in (1, 32)
            ),
        ]
        time_ratios: list[str] = []
        for stage, batch, run_default, run_other in pairs:
            seconds, processed, time_ratio = interleaved(run_default, run_other, max(args.repeats, 5))
            results.append(Throughput(name, stage, batch, processed, seconds, ours))
            print(
                f"{name} {stage} batch {batch}: {processed / seconds:.1f} images/s, "
                f"{time_ratio:.2f}× the time",
                flush=True,
            )
            time_ratios.append(f"{stage} batch {batch} {fmt(time_ratio)}×")
        ratio_notes.append(
            f"'{name}' time per image ÷ 'ours' ({_card.name}), median of per-round ratios, the two timed in "
            f"alternation: " + ", ".join(time_ratios)
        )

    if not args.no_dlib:
        baseline = DlibBaseline()
        boxes = [largest(baseline.locate(image)) for image in images]

        def dlib_full() -> int:
            for image in images:
                baseline.encode(image, largest(baseline.locate(image)))
            return n

        def dlib_embed() -> int:
            done = 0
            for image, box in zip(images, boxes, strict=True):
                if box:
                    baseline.encode(image, box)
                    done += 1
            return done

        record("face_recognition", "detect+align+embed", 1, dlib_full, "dlib, 1 thread")
        record("face_recognition", "embed-only (known locations)", 1, dlib_embed, "dlib, 1 thread")

    table = Table(
        title=(
            f"Embedding throughput, {n} LFW images (250×250, decoded beforehand), largest face, {args.device}"
        ),
        columns=["pipeline", "stage", "batch", "threads", "images", "images/s", "ms/image", "ours ÷ dlib"],
    )
    dlib_rate = {r.stage: r.images_per_s for r in results if r.pipeline == "face_recognition"}
    comparable = {
        "detect+align+embed": "detect+align+embed",
        "align+embed (known landmarks)": "embed-only (known locations)",
        "embed-only (aligned crops)": "embed-only (known locations)",
    }
    for r in results:
        baseline_stage = comparable.get(r.stage, "")
        ratio = ""
        if r.pipeline != "face_recognition" and baseline_stage in dlib_rate:
            ratio = fmt(r.images_per_s / dlib_rate[baseline_stage]) + "×"
        table.add(
            r.pipeline, r.stage, r.batch, r.threads, r.images, fmt(r.images_per_s),
            fmt(1000.0 * r.seconds / r.images), ratio,
        )  # fmt: skip
    table.notes.append(
        f"ours via bench.bench_pipeline (pick_images/pipeline_run/embed_run/timed), best of {args.repeats} "
        "after a warm-up run; dlib has no batched CPU path in face_recognition"
    )
    if plain is not None:
        table.notes.append(
            f"'{BEFORE}': the same embedder with FACES_CPU_GRAPH_REWRITES=false (SFace's 27 PRelu as "
            "shipped); the other 'ours' rows run the exact rewrite s·x + (1−s)·Relu(x) that the service "
            "applies to CPU sessions by default"
        )
    table.notes.extend(ratio_notes)
    if not args.no_dlib:
        build = dlib_build()
        table.notes.append(
            f"dlib {baseline_versions().get('dlib')} built from the PyPI sdist: "
            f"BLAS {build['DLIB_USE_BLAS']}, CUDA {build['DLIB_USE_CUDA']} "
            "(without BLAS its ResNet encoder is slower than a BLAS build)"
        )
    if args.device == "gpu":
        table.notes.append("dlib rows stay on the CPU unless dlib itself was built with CUDA")
    report.tables.append(table)
    report.raw = {
        "results": [asdict(r) | {"images_per_s": r.images_per_s} for r in results],
        "images": [str(p.relative_to(args.lfw_dir)) for p in paths],
        "faces_found": len(crops[0]),
        "versions": baseline_versions(),
    }
    finish_report(report, started, args.out)
    return report


if __name__ == "__main__":
    main()

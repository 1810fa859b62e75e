"""Cost of one large image in the analysis step, before and after reduced-size decoding, side by side.

Each (image, path) pair runs in a fresh process so its memory figures are its own: CPU seconds and
wall time of one ``decode → detect → align`` pass (the best of ``--repeats``), the peak RSS during it
and the RSS once it is done. "before" is the full-resolution path the service used until issue 12
(``decode_image`` + ``FaceAnalyzer.analyze``, no heap trim); "after" is ``analyze_encoded`` (JPEG DCT
scaling / PNG box reduction, full-quality second pass for small faces) followed by ``malloc_trim``,
as the service runs it. The images are built from real LFW photos.

    python -m bench.bench_large_images
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from bench.common import DEFAULT_LFW_ROOT, REPO_ROOT, Table, finish_report, fmt, rss_bytes, start_report

MIB = 1024 * 1024
MAX_PIXELS = 40_000_000


def build_images(lfw_root: Path, out: Path) -> dict[str, tuple[str, Path]]:
    """name → (description, file): the hostile probe's giant images and two genuine large photos."""
    face = Image.open(lfw_root / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg").convert("RGB")
    images: dict[str, tuple[str, Path]] = {}

    def save(name: str, what: str, image: Image.Image, fmt_name: str, **options: Any) -> None:
        buffer = io.BytesIO()
        image.save(buffer, format=fmt_name, **options)
        path = out / f"{name}.{fmt_name.lower()}"
        path.write_bytes(buffer.getvalue())
        images[name] = (f"{what} ({len(buffer.getvalue()) // 1024} KB)", path)

    flat = Image.new("RGB", (6324, 6324), (128, 128, 128))
    flat.paste(face, (3162, 3162))
    save("giant_png", "6324² flat PNG with a 250 px photo in it", flat, "PNG", compress_level=9)
    save("giant_jpeg", "the same as JPEG", flat, "JPEG", quality=90)
    group = Image.new("RGB", (6000, 4000), (128, 128, 128))
    group.paste(face.resize((500, 500), Image.Resampling.BICUBIC), (3000, 1500))
    save("small_face_6000x4000", "6000×4000 JPEG, one ~180 px face", group, "JPEG", quality=90)
    save(
        "face_fills_4000",
        "4000² JPEG, the face fills it",
        face.resize((4000, 4000), Image.Resampling.BICUBIC),
        "JPEG",
        quality=90,
    )
    lfw = lfw_root / "images" / "Serena_Williams" / "Serena_Williams_0001.jpg"
    images["lfw_250"] = ("LFW photo, 250² JPEG", lfw)
    return images


def measure(path: Path, variant: str, repeats: int, lfw_root: Path) -> dict[str, Any]:
    """Runs in a child process: one image, one path; prints the figures as JSON."""
    from service.bootstrap import load_face_models
    from service.runtime.glibc import heap_trimmer
    from service.runtime.imaging import decode_image
    from service.settings import Settings

    _embedder, _card, analyzer = load_face_models(Settings(execution_provider="cpu"))
    data = path.read_bytes()
    trim = heap_trimmer()
    warm = lfw_root / "images" / "Colin_Powell" / "Colin_Powell_0002.jpg"
    analyzer.analyze_encoded(warm.read_bytes(), max_pixels=MAX_PIXELS)  # sessions and arenas warm
    if trim is not None:
        trim()
    ready = rss_bytes()[0]
    # Peak RSS from here on only (Linux: writing 5 to clear_refs resets VmHWM), not model loading's.
    Path("/proc/self/clear_refs").write_text("5")

    def one() -> int:
        if variant == "before":
            return len(analyzer.analyze(decode_image(data, max_pixels=MAX_PIXELS)))
        found = analyzer.analyze_encoded(data, max_pixels=MAX_PIXELS)
        if trim is not None:
            trim()
        return len(found)

    best_cpu = best_wall = float("inf")
    faces = 0
    # On a worker thread, as in the service (its own malloc arena).
    with ThreadPoolExecutor(max_workers=1) as worker:
        for _ in range(repeats):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            faces = worker.submit(one).result()
            best_cpu = min(best_cpu, time.process_time() - cpu0)
            best_wall = min(best_wall, time.perf_counter() - wall0)
        current, peak = rss_bytes()
    return {
        "faces": faces,
        "cpu_s": best_cpu,
        "wall_s": best_wall,
        "rss_ready_mib": ready / MIB,
        "rss_peak_mib": peak / MIB,
        "rss_after_mib": current / MIB,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lfw-root", type=Path, default=DEFAULT_LFW_ROOT)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("IMAGE", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.child[1], args.repeats, args.lfw_root)))
        return 0
    report = start_report("bench_large_images", argv)
    started = time.perf_counter()
    table = Table(
        "One large image through decode → detect → align: before / after reduced-size decoding",
        ["image", "faces", "CPU s", "wall s", "peak RSS, MiB", "RSS after, MiB"],
    )
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp:
        for name, (what, path) in build_images(args.lfw_root, Path(tmp)).items():
            for variant in ("before", "after"):
                command = [
                    sys.executable,
                    "-m",
                    "bench.bench_large_images",
                    "--repeats",
                    str(args.repeats),
                    "--lfw-root",
                    str(args.lfw_root),
                    "--child",
                    str(path),
                    variant,
                ]
                out = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
                results[f"{name}/{variant}"] = json.loads(out.stdout.strip().splitlines()[-1])
            before, after = results[f"{name}/before"], results[f"{name}/after"]

            def pair(key: str, digits: int, a: dict[str, Any] = after, b: dict[str, Any] = before) -> str:
                return f"{fmt(b[key], digits)} → {fmt(a[key], digits)}"

            table.add(
                what,
                f"{before['faces']} → {after['faces']}",
                pair("cpu_s", 2),
                pair("wall_s", 2),
                pair("rss_peak_mib", 0),
                pair("rss_after_mib", 0),
            )
    table.notes.append(
        "best of the repeats, on a worker thread as in the service; each in a fresh process; peak RSS "
        "counted from after model loading; 'RSS after': once the image is done (models alone ~190 MiB)"
    )
    report.tables = [table]
    report.raw = {"results": results}
    finish_report(report, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

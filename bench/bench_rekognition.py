"""The Rekognition-compatible API's overhead beside ``/v1`` identify, interleaved in one run.

One real ``faces serve`` (uvicorn) with auth on and ``--synthetic`` stored faces (100k by default,
one per subject, the index rebuilt from the store at start-up); the same real LFW probe photos go,
request after request in turn, to

- ``POST /v1/collections/synthetic/identify?max_faces=1`` (multipart, ``X-API-Key``), through httpx
  (the largest face only: the face the Rekognition searches use);
- ``SearchUsersByImage`` (JSON 1.1, base64 image, SigV4-signed by boto3, verified by the server):
  the same per-subject search;
- ``SearchFacesByImage`` (same transport, face-level search).

Latency is measured at the client, so it includes everything a caller pays: base64 and JSON on both
sides, boto3's signing and the server's verification. The target is the p50 of the Rekognition calls
within 10% of ``/v1`` identify's.

    python -m bench.bench_rekognition                      # 100k faces, 200 rounds
    python -m bench.bench_rekognition --synthetic 10k --rounds 50
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import boto3
import httpx
from botocore.config import Config

from bench.common import (
    DEFAULT_LFW_ROOT,
    LatencyStats,
    Table,
    cpu_busy_fraction,
    finish_report,
    fmt,
    fmt_count,
    parse_count,
    start_report,
)
from bench.server import SYNTHETIC_COLLECTION, ServerConfig, running, seed_synthetic

ACCESS_KEY_ID = "bench"
SECRET = "bench-secret-key"
PROBE_PEOPLE = ["George_W_Bush", "Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder"]


def probe_images(lfw_root: Path, count: int) -> list[bytes]:
    paths = sorted(p for person in PROBE_PEOPLE for p in (lfw_root / "images" / person).glob("*.jpg"))
    return [p.read_bytes() for p in paths[:count]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lfw-root", type=Path, default=DEFAULT_LFW_ROOT)
    parser.add_argument("--synthetic", type=parse_count, default=100_000, help="stored faces (100k, 1M ...)")
    parser.add_argument("--rounds", type=int, default=200, help="requests of each kind (interleaved)")
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args(argv)

    report = start_report("bench_rekognition", argv)
    report.machine["cpu_busy_at_start"] = cpu_busy_fraction()
    started = time.perf_counter()
    images = probe_images(args.lfw_root, 20)
    samples: dict[str, list[float]] = {"identify": [], "users": [], "faces": []}
    with tempfile.TemporaryDirectory(prefix="bench-rekognition-") as tmp:
        config = ServerConfig(Path(tmp), extra_env={"FACES_API_KEYS": f"{ACCESS_KEY_ID}={SECRET}"})
        seed_s = seed_synthetic(config.database_url, args.synthetic)
        with running(config) as server:
            client = boto3.client(
                "rekognition",
                endpoint_url=server.url,
                region_name="us-east-1",
                aws_access_key_id=ACCESS_KEY_ID,
                aws_secret_access_key=SECRET,
                config=Config(retries={"max_attempts": 1}),
            )
            http = httpx.Client(base_url=server.url, headers={"X-API-Key": SECRET}, timeout=60.0)
            url = f"/v1/collections/{SYNTHETIC_COLLECTION}/identify"

            def identify(image: bytes) -> None:
                # max_faces=1: the largest face, the one face the Rekognition searches use.
                response = http.post(
                    url, params={"max_faces": 1}, files={"image": ("probe.jpg", image, "image/jpeg")}
                )
                response.raise_for_status()

            def users(image: bytes) -> None:
                client.search_users_by_image(CollectionId=SYNTHETIC_COLLECTION, Image={"Bytes": image})

            def faces(image: bytes) -> None:
                client.search_faces_by_image(CollectionId=SYNTHETIC_COLLECTION, Image={"Bytes": image})

            calls = {"identify": identify, "users": users, "faces": faces}
            for i in range(args.warmup):
                for call in calls.values():
                    call(images[i % len(images)])
            for i in range(args.rounds):
                image = images[i % len(images)]
                # Rotate who goes first, so no kind always follows the same other kind.
                order = list(calls)[i % 3 :] + list(calls)[: i % 3]
                for name in order:
                    begun = time.perf_counter()
                    calls[name](image)
                    samples[name].append(time.perf_counter() - begun)
            http.close()

    stats = {name: LatencyStats.from_seconds(values) for name, values in samples.items()}
    base = stats["identify"].p50_ms
    table = Table(
        title=f"Rekognition API beside /v1 identify, {fmt_count(args.synthetic)} stored faces, "
        f"{args.rounds} interleaved rounds (client-side latency, auth on)",
        columns=["request", "transport", "p50 ms", "p90 ms", "p99 ms", "mean ms", "p50 vs /v1"],
    )
    rows = {
        "identify": ("/v1 identify (max_faces=1)", "multipart + X-API-Key"),
        "users": ("SearchUsersByImage", "JSON 1.1 + base64 + SigV4"),
        "faces": ("SearchFacesByImage", "JSON 1.1 + base64 + SigV4"),
    }
    for name, (label, transport) in rows.items():
        s = stats[name]
        table.add(
            label,
            transport,
            fmt(s.p50_ms),
            fmt(s.p90_ms),
            fmt(s.p99_ms),
            fmt(s.mean_ms),
            f"{100.0 * (s.p50_ms / base - 1.0):+.1f}%",
        )
    worst = max(stats["users"].p50_ms, stats["faces"].p50_ms) / base - 1.0
    table.notes.append(
        f"target: Rekognition p50 within 10% of /v1 identify's: {'met' if worst <= 0.10 else 'NOT met'} "
        f"(worst {100 * worst:+.1f}%)"
    )
    table.notes.append(f"{len(images)} LFW probe photos in turn; synthetic faces stored in {seed_s:.1f}s")
    report.tables = [table]
    report.raw = {
        "synthetic": args.synthetic,
        "rounds": args.rounds,
        "stats": {name: asdict(s) for name, s in stats.items()},
        "p50_overhead": {name: stats[name].p50_ms / base - 1.0 for name in ("users", "faces")},
    }
    finish_report(report, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run the selected benchmarks, then print one summary table and write the README performance section.

Each benchmark runs in its own process (clean thread pools and memory) and saves
``bench/results/<name>.json``; the summary and ``bench/results/README_performance.md`` are rebuilt
from every saved result, each number next to the command that produced it.

    python -m bench                                  # all but accuracy (about 10 minutes on 2 cores)
    python -m bench --full                           # + 1M rows, LFW accuracy, Milvus next to FAISS
    python -m bench --only accuracy                  # one benchmark
    python -m bench --report-only                    # just rebuild the summary and markdown
    python -m bench --device gpu                     # GPU paths (CUDA ONNX Runtime, GPU FAISS)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, RESULTS_DIR, Report, Table, fmt, fmt_count
from bench.readme_table import update_readme

ORDER = [
    "bench_search",
    "bench_stages",
    "bench_pipeline",
    "bench_embed",
    "bench_accuracy",
    "bench_http",
    "bench_memory",
    "bench_calibrate",
    "bench_large_images",
    "bench_hostile",
    "bench_milvus",
    "bench_milvus_ann",
    "bench_bigindex",
    "bench_rekognition",
]
DEFAULT = ["search", "stages", "pipeline", "embed", "http", "memory", "calibrate", "large_images", "hostile"]
TITLES = {
    "bench_search": "Identify search (exact FAISS flat scan)",
    "bench_stages": "Identify request, stage by stage",
    "bench_embed": "Embedding throughput vs face_recognition (dlib)",
    "bench_pipeline": "Pipeline stages",
    "bench_accuracy": "LFW accuracy vs face_recognition (dlib)",
    "bench_http": "HTTP load (uvicorn + locust)",
    "bench_memory": "Service memory",
    "bench_calibrate": "Self-calibration of a collection's identify threshold",
    "bench_large_images": "Large images: before / after reduced-size decoding",
    "bench_hostile": "Hostile inputs (reliability)",
    "bench_milvus": "Milvus next to FAISS (identify, enroll, consistency)",
    "bench_milvus_ann": "Milvus approximate indexes (HNSW, IVF_FLAT) vs exact FLAT on real faces",
    "bench_bigindex": "Big galleries on real faces: compressed index vs exact, coalesced scans",
    "bench_rekognition": "Rekognition-compatible API beside /v1 identify",
}


def bench_argv(name: str, args: argparse.Namespace) -> list[str]:
    if name == "pipeline":  # the faces helper's script speaks ONNX Runtime provider names
        return ["--provider", "cuda" if args.device == "gpu" else "cpu"]
    argv = ["--device", args.device] if name in ("search", "embed", "http", "memory") else []
    if args.full and name in ("search", "stages", "memory", "calibrate"):
        argv.append("--full")
    if args.full and name == "milvus":
        argv += ["--sizes", "100k,1M"]
    return argv


def run_benchmark(name: str, argv: list[str]) -> int:
    command = [sys.executable, "-m", f"bench.bench_{name}", *argv]
    print(f"\n=== python -m bench.bench_{name} {' '.join(argv)}", flush=True)
    return subprocess.run(command, cwd=REPO_ROOT, check=False).returncode


def load_reports(results_dir: Path) -> list[Report]:
    reports = []
    for name in ORDER:
        path = results_dir / f"{name}.json"
        if path.is_file():
            reports.append(Report.load(path))
        reports += [Report.load(p) for p in sorted(results_dir.glob(f"{name}-*.json"))]
        if name == "bench_pipeline" and not path.is_file() and (results_dir / "pipeline.json").is_file():
            reports.append(pipeline_report(json.loads((results_dir / "pipeline.json").read_text())))
    return reports


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def base_name(report: Report) -> str:
    """``bench_http-1m`` → ``bench_http`` (tagged runs share their benchmark's title and headlines)."""
    return report.name.split("-", 1)[0]


def pipeline_report(data: dict[str, Any]) -> Report:
    """``bench/bench_pipeline.py`` (the faces helper's) writes its own schema; show it like the others."""
    device = dict(data.get("device", {}))
    table = Table(
        title=f"Face pipeline throughput: {data.get('input', '')}, best of {data.get('best_of', '?')}",
        columns=["stage", "batch", "images/s", "ms/image"],
    )
    for row in data.get("results", []):
        table.add(row["stage"], row["batch"], fmt(row["images_per_s"]), fmt(row["ms_per_image"]))
    table.notes.append(
        f"{device.get('embedder_provider', '?')}, onnxruntime {device.get('onnxruntime', '?')}, "
        f"intra-op threads {device.get('intra_op_threads', '?')}"
    )
    machine = {
        "cpu_model": device.get("cpu"),
        "affinity_cpus": device.get("logical_cpus"),
        "loadavg_start": [device.get("load_average_1m_at_start", "?")],
    }
    return Report(
        name="bench_pipeline",
        command=str(data.get("command", "python -m bench.bench_pipeline")),
        tables=[table],
        raw={"results": data.get("results", [])},
        machine=machine,
        started_at=str(data.get("date", "")),
    )


# --- one-line headlines per benchmark, from the raw data each report keeps ----------------------


def _search(raw: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for case in raw.get("cases", []):
        rows.append(
            (
                f"identify search {fmt_count(case['gallery'])} ({case['device']})",
                f"p50 {fmt(case['batch1']['p50_ms'])} ms, p99 {fmt(case['batch1']['p99_ms'])} ms, "
                f"{fmt(case['batch1_qps'])} q/s batch-1; {fmt(case['batched_qps'])} q/s "
                f"batch-{case['batch_size']}; {fmt(case['batch1']['p50_ms'] / case['floor_ms'])}× the "
                "bandwidth floor",
            )
        )
    return rows


def _embed(raw: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"{r['pipeline']} {r['stage']}, batch {r['batch']}", f"{fmt(r['images_per_s'])} images/s")
        for r in raw.get("results", [])
    ]


def _pipeline(raw: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"pipeline {r['stage']}, batch {r['batch']}", f"{fmt(r['images_per_s'])} images/s")
        for r in raw.get("results", [])
    ]


def _stages(raw: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for case in raw.get("cases", []):
        stages = case["stages"]
        slowest = max(
            (s for s in stages if not s.startswith(" ") and "before" not in s),
            key=lambda s: stages[s]["mean_ms"],
        )
        before = case.get("request_ms_before_rewrite")
        was = f" ({fmt(before)} ms before the PRelu rewrite)" if before is not None else ""
        rows.append(
            (
                f"identify in-process at {fmt_count(case['faces'])} faces",
                f"{fmt(case['request_ms_shipped'])} ms{was}; slowest stage: {slowest.strip()} "
                f"({fmt(stages[slowest]['mean_ms'])} ms)",
            )
        )
    return rows


def _accuracy(raw: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, label in (
        ("shipped", "LFW accuracy, shipped model"),
        ("dlib", "LFW accuracy, face_recognition"),
    ):
        data = raw.get(key, {})
        if isinstance(data.get("accuracy_mean"), (int, float)):
            rows.append(
                (label, f"{100 * data['accuracy_mean']:.2f}% ± {100 * data.get('accuracy_std', 0.0):.2f}")
            )
    return rows


def _http(raw: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for r in raw.get("results", []):
        batcher = "on" if r["batching"] else "off"
        if r.get("experiment", "none") != "none":
            batcher += f", + {r['experiment']}"
        gallery = fmt_count(r["gallery"])
        rows.append(
            (
                f"HTTP {r['operation']} ({gallery} gallery, batcher {batcher}, {plural(r['users'], 'user')})",
                f"{fmt(r['rps'])} req/s, p50 {fmt(r['p50_ms'])} ms, p99 {fmt(r['p99_ms'])} ms, "
                f"{fmt(r['embeddings_per_s'])} embeddings/s",
            )
        )
    return rows


def _memory(raw: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            f"RSS at {fmt_count(c['faces'])} faces",
            f"{fmt(c['rss_after_requests_mib'])} MiB (ready {fmt(c['rss_ready_mib'])} MiB, "
            f"start {fmt(c['rebuild_startup_s'])} s rebuild / {fmt(c['snapshot_startup_s'])} s snapshot)",
        )
        for c in raw.get("cases", [])
    ]


def _calibrate(raw: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            f"calibrate at {fmt_count(c['faces'])} faces",
            f"{fmt(c['endpoint_best_s'])} s ({c['probes']} probes; reading embeddings {fmt(c['load_s'])} s)",
        )
        for c in raw.get("cases", [])
    ]


def _hostile(raw: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for run in raw.get("runs", []):
        if "idle" not in run:  # the --faults / --engine-outage reports: tables of their own, no headline
            continue
        five = sum(c["server_errors"] for c in run["cases"])
        idle, loaded = run["idle"], run["loaded"]
        rows.append(
            (
                f"hostile inputs ({run['label']})",
                f"{five} 5xx over {len(run['cases'])} cases; identify p99 {fmt(idle['p99_ms'])} ms alone, "
                f"{fmt(loaded['p99_ms'])} ms beside a giant-image client; RSS peak "
                f"{fmt(run['rss_peak_mib'])} MiB, settled {fmt(run['rss_settled_mib'])} MiB",
            )
        )
    return rows


def _milvus(raw: dict[str, Any]) -> list[tuple[str, str]]:
    rows = raw.get("rows", [])
    out = []
    for faiss_row in (r for r in rows if r["engine"] == "faiss"):
        size = faiss_row["gallery"]
        milvus = [r for r in rows if r["engine"] == "milvus" and r["gallery"] == size]
        text = f"FAISS p50 {fmt(faiss_row['identify']['p50_ms'])} ms; Milvus " + ", ".join(
            f"{r['consistency']} p50 {fmt(r['identify']['p50_ms'])} / p99 {fmt(r['identify']['p99_ms'])} ms"
            for r in milvus
        )
        out.append((f"identify at {fmt_count(size)} faces, FAISS vs Milvus", text))
    return out


HEADLINES: dict[str, Callable[[dict[str, Any]], list[tuple[str, str]]]] = {
    "bench_search": _search,
    "bench_stages": _stages,
    "bench_pipeline": _pipeline,
    "bench_embed": _embed,
    "bench_accuracy": _accuracy,
    "bench_http": _http,
    "bench_memory": _memory,
    "bench_calibrate": _calibrate,
    "bench_hostile": _hostile,
    "bench_milvus": _milvus,
}


def summary_table(reports: list[Report]) -> Table:
    table = Table(title="Summary (bench/results/*.json)", columns=["measurement", "result", "command"])
    for report in reports:
        extract = HEADLINES.get(base_name(report))
        if extract is None:
            continue
        for label, value in extract(report.raw):
            table.add(label, value, report.command)
    return table


def machine_line(report: Report) -> str:
    m = report.machine
    parts = [str(m.get("cpu_model") or "unknown CPU"), f"{m.get('affinity_cpus', '?')} cores"]
    if m.get("mem_total_gib"):
        parts.append(f"{m['mem_total_gib']} GiB")
    load = (m.get("loadavg_start") or ["?"])[0]
    parts.append(f"started {report.started_at}, 1-min load average at start {load}")
    return ", ".join(parts)


def readme_markdown(reports: list[Report]) -> str:
    lines = [
        "## Performance",
        "",
        "Every number below comes from the command printed above its table; the JSON behind it is in",
        "`bench/results/`. `python -m bench --full` reruns everything (CPU); `python -m bench --help` lists",
        "the options. The benchmark-only dependencies are the `bench` extra: `pip install -e '.[bench]'`.",
        "",
    ]
    for report in reports:
        lines += [f"### {TITLES.get(base_name(report), report.name)}", "", f"`{report.command}`", ""]
        lines += [f"Machine: {machine_line(report)}.", ""]
        for table in report.tables:
            lines += [f"**{table.title}**", "", table.to_markdown(), ""]
            lines += [f"- {note}" for note in table.notes]
            if table.notes:
                lines.append("")
    lines += slowest_stage_markdown(reports)
    lines += [
        "### GPU",
        "",
        "Not measured: no GPU was available to the session that produced these numbers. The same",
        "scripts take `--device gpu` (CUDA execution provider for ONNX Runtime, the GPU FAISS index in",
        "the service; needs the `gpu` extra): `python -m bench --device gpu --full`.",
        "",
    ]
    return "\n".join(lines)


def slowest_stage_markdown(reports: list[Report]) -> list[str]:
    """The bottleneck per gallery size, written from bench_stages' numbers (nothing typed by hand)."""
    stages_report = next((r for r in reports if r.name == "bench_stages"), None)
    if stages_report is None:
        return []
    lines = ["### Where an identify request spends its time", "", f"From `{stages_report.command}`:", ""]
    for case in stages_report.raw.get("cases", []):
        stages = case["stages"]
        if "request_ms_before_rewrite" not in case:
            continue  # a report from before these fields existed: --report-only on old JSON
        detect_ms = stages["detect+align+quality"]["mean_ms"]
        embed_ms = stages["embed"]["mean_ms"]
        embed_before = stages["embed, PRelu as shipped (before the CPU graph rewrite)"]["mean_ms"]
        faiss_ms = stages["  of which FAISS top-k"]["mean_ms"]
        faiss_before = stages["FAISS top-k, all OpenMP threads (before search_threads=1)"]["mean_ms"]
        total = case["request_ms_shipped"]
        lines.append(
            f"- {fmt_count(case['faces'])} faces: {fmt(total)} ms per request as shipped "
            f"({fmt(case['request_ms_before_rewrite'])} ms before the PRelu rewrite, "
            f"{fmt(case['request_ms_before_lookup_fixes'])} ms before all three speed-ups); "
            f"embed {fmt(embed_ms)} ms (was {fmt(embed_before)} ms), detect+align {fmt(detect_ms)} ms, "
            f"FAISS top-k {fmt(faiss_ms)} ms (all threads: {fmt(faiss_before)} ms)."
        )
    lines += [
        "",
        "The speed-ups, each measured against its own 'before' in the same run: SFace's 27 PRelu run",
        "on ONNX Runtime's generic CPU kernel and break the blocked layout of the convolutions around",
        "them; `service.runtime.graph_rewrite` rewrites them exactly as s·x + (1−s)·Relu(x) for CPU",
        "sessions. Batch-1 FAISS scans gain nothing from a second OpenMP thread and lose a lot to",
        "OpenMP's barrier when the cores are busy. Identify used to resolve its collection twice, each",
        "time with `COUNT(*)` over its subjects and faces. The `+ ...` rows of the HTTP table undo one",
        "change each, end to end (bench/experiments.py).",
        "",
    ]
    for http in (r for r in reports if base_name(r) == "bench_http"):
        rows = [r for r in http.raw.get("results", []) if r["scenario"] == "synthetic gallery"]
        base = next((r for r in rows if r["experiment"] == "none"), None)
        if base is not None:
            lines += [f"End to end, identify over HTTP (`{http.command}`):", ""]
            for r in rows:
                label = "as shipped" if r["experiment"] == "none" else f"+ {r['experiment']}"
                change = 100.0 * (r["rps"] / base["rps"] - 1.0)
                lines.append(
                    f"- {fmt_count(r['gallery'])} faces, {plural(r['users'], 'user')}, {label}: "
                    f"{fmt(r['rps'])} req/s "
                    f"({change:+.0f}% vs shipped), p50 {fmt(r['p50_ms'])} ms, p99 {fmt(r['p99_ms'])} ms"
                )
            lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default="",
        help="comma list of: search,stages,pipeline,embed,accuracy,http,memory,calibrate,large_images,"
        "hostile,milvus,milvus_ann",
    )
    parser.add_argument("--full", action="store_true", help="1M rows and the LFW accuracy comparison")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--report-only", action="store_true", help="rebuild the summary from saved results")
    args = parser.parse_args(argv)

    selected = [n.strip() for n in args.only.split(",") if n.strip()] or (
        [*DEFAULT, "accuracy", "milvus"] if args.full else DEFAULT
    )
    failures: list[str] = []
    started = time.perf_counter()
    if not args.report_only:
        for name in selected:
            if run_benchmark(name, bench_argv(name, args)) != 0:
                failures.append(name)

    reports = load_reports(RESULTS_DIR)
    markdown_path = RESULTS_DIR / "README_performance.md"
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(readme_markdown(reports))
    readme_updated = update_readme(REPO_ROOT / "README.md", reports)
    print()
    print(summary_table(reports).to_text())
    print(f"\nmarkdown: {markdown_path.relative_to(REPO_ROOT)}; {time.perf_counter() - started:.0f} s")
    print(
        "README.md performance table: " + ("rewritten" if readme_updated else "markers not found, untouched")
    )
    if failures:
        print(f"FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

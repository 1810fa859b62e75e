"""The README's performance table, written from the saved JSON (``python -m bench --report-only``).

Only the rows live here; the prose around them stays hand-written. The table sits in README.md
between two markers and is replaced whole, so no number in it is ever typed by hand.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import Report, fmt, fmt_count

START = "<!-- bench:headlines (python -m bench --report-only rewrites this table) -->"
END = "<!-- /bench:headlines -->"
BEFORE = "ours, PRelu as shipped (before)"

Row = tuple[str, str, str]


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _per_case(cases: list[dict[str, Any]], value: Callable[[dict[str, Any]], str]) -> str:
    """One value per gallery size, as the README writes them: "a / b / c"."""
    return " / ".join(value(case) for case in cases)


def _embed(report: Report) -> Iterator[Row]:
    results = report.raw.get("results", [])
    for stage, dlib_stage, label in (
        ("detect+align+embed", "detect+align+embed", "detect + align + embed, images/s"),
        (
            "embed-only (aligned crops)",
            "embed-only (known locations)",
            "embed only (aligned crops), images/s",
        ),
    ):
        ours = _find(results, pipeline="ours", stage=stage, batch=1)
        if ours is None:
            continue
        text = f"**{fmt(ours['images_per_s'])}**"
        before = _find(results, pipeline=BEFORE, stage=stage, batch=1)
        if before is not None:
            text += f" ({fmt(before['images_per_s'])} before the PRelu rewrite)"
        dlib = _find(results, pipeline="face_recognition", stage=dlib_stage)
        if dlib is not None:
            ratio = ours["images_per_s"] / dlib["images_per_s"]
            text += f"; `face_recognition`: {fmt(dlib['images_per_s'])}, ours ×{fmt(ratio)}"
        yield label, text, report.command


def _http(report: Report) -> Iterator[Row]:
    results = report.raw.get("results", [])
    synthetic = [r for r in results if r["scenario"] == "synthetic gallery" and r["operation"] == "identify"]
    base = _find(synthetic, experiment="none")
    if base is not None:
        text = f"**{fmt(base['rps'])} req/s**, p50 {fmt(base['p50_ms'])} ms, p99 {fmt(base['p99_ms'])} ms"
        undone = [
            f"{fmt(r['rps'])} req/s {label}"
            for name, label in (
                ("prelu-kept", "before the PRelu rewrite"),
                ("faiss-all-threads", "with FAISS on all threads"),
                ("counting-lookup", "with the counting lookup"),
            )
            if (r := _find(synthetic, experiment=name)) is not None
        ]
        if undone:
            text += f" ({'; '.join(undone)})"
        label = f"identify over HTTP, {fmt_count(base['gallery'])} synthetic faces, {base['users']} users"
        yield label, text, report.command
    for operation in ("identify", "enroll"):
        rows = [r for r in results if r["scenario"] != "synthetic gallery" and r["operation"] == operation]
        on, off = _find(rows, batching=True), _find(rows, batching=False)
        if on is None or off is None:
            continue
        text = (
            f"{fmt(on['rps'])} / {fmt(off['rps'])} req/s, p99 {fmt(on['p99_ms'])} / {fmt(off['p99_ms'])} ms; "
            f"mean model batch {fmt(on['mean_batch'])} / {fmt(off['mean_batch'])}"
        )
        label = (
            f"{operation} over HTTP, {fmt_count(on['gallery'])} LFW faces, {on['users']} users, "
            "batcher on / off"
        )
        yield label, text, report.command


def _stages(report: Report) -> Iterator[Row]:
    cases = [c for c in report.raw.get("cases", []) if "request_ms_before_rewrite" in c]
    if not cases:
        return
    sizes = _per_case(cases, lambda c: fmt_count(c["faces"]))

    def series(key: str) -> str:
        return _per_case(cases, lambda c: fmt(c[key]))

    text = (
        f"**{series('request_ms_shipped')} ms** (before the PRelu rewrite "
        f"{series('request_ms_before_rewrite')}; before all three speed-ups "
        f"{series('request_ms_before_lookup_fixes')})"
    )
    yield f"one identify request in process at {sizes} faces", text, report.command


def _search(report: Report) -> Iterator[Row]:
    cases = report.raw.get("cases", [])
    if not cases:
        return
    sizes = _per_case(cases, lambda c: fmt_count(c["gallery"]))
    p50 = _per_case(cases, lambda c: fmt(c["batch1"]["p50_ms"]))
    floor = _per_case(cases, lambda c: fmt(c["floor_ms"]))
    last = cases[-1]
    text = (
        f"{p50} ms; memory-bandwidth floor {floor} ms "
        f"({fmt(last['batch1']['p50_ms'] / last['floor_ms'])}× the floor at {fmt_count(last['gallery'])})"
    )
    yield f"search only, batch 1, p50 at {sizes}", text, report.command


def _memory(report: Report) -> Iterator[Row]:
    cases = report.raw.get("cases", [])
    if not cases:
        return
    sizes = _per_case(cases, lambda c: fmt_count(c["faces"]))
    rss = _per_case(cases, lambda c: fmt(c["rss_after_requests_mib"]))
    last = cases[-1]
    text = (
        f"{rss} MiB after 20 identify requests; start-up at {fmt_count(last['faces'])}: "
        f"{fmt(last['rebuild_startup_s'])} s rebuilding from SQLite, {fmt(last['snapshot_startup_s'])} s "
        "from a verified snapshot"
    )
    yield f"service RSS at {sizes} faces", text, report.command


def _accuracy(report: Report) -> Iterator[Row]:
    ours, dlib = report.raw.get("shipped", {}), report.raw.get("dlib", {})
    if "accuracy_mean" in ours and "accuracy_mean" in dlib:
        text = (
            f"{100 * ours['accuracy_mean']:.2f}% ± {100 * ours['accuracy_std']:.2f} "
            f"(`face_recognition`: {100 * dlib['accuracy_mean']:.2f}% ± {100 * dlib['accuracy_std']:.2f})"
        )
        yield "LFW 10-fold accuracy, same 6000 pairs", text, report.command


def _calibrate(report: Report) -> Iterator[Row]:
    cases = report.raw.get("cases", [])
    if not cases:
        return
    sizes = _per_case(cases, lambda c: fmt_count(c["faces"]))
    seconds = _per_case(cases, lambda c: fmt(c["endpoint_best_s"]))
    text = (
        f"{seconds} s (leave-one-subject-out over at most {max(c['probes'] for c in cases)} sampled probes, "
        "embeddings read from SQLite included)"
    )
    yield f"calibrate a collection's identify threshold at {sizes} faces", text, report.command


def _milvus(report: Report) -> Iterator[Row]:
    rows = report.raw.get("rows", [])
    for faiss_row in (r for r in rows if r["engine"] == "faiss"):
        size = faiss_row["gallery"]
        faiss_p50 = faiss_row["identify"]["p50_ms"]
        parts = []
        for level, note in (
            ("Customized", ", the default: read-your-writes across replicas"),
            ("Strong", ", read-your-writes, waits every time"),
            ("Bounded", ""),
        ):
            row = _find(rows, engine="milvus", gallery=size, consistency=level)
            if row is not None:
                p50 = row["identify"]["p50_ms"]
                parts.append(f"{level} {fmt(p50)} ms ({fmt(p50 / faiss_p50)}×{note})")
        if parts:
            text = f"FAISS in process {fmt(faiss_p50)} ms; Milvus " + ", ".join(parts)
            yield f"exact search p50 at {fmt_count(size)} faces, FAISS vs Milvus 2.3.5", text, report.command


ROWS: list[tuple[str, Callable[[Report], Iterator[Row]]]] = [
    ("bench_embed", _embed),
    ("bench_http", _http),
    ("bench_http-1m", _http),
    ("bench_stages", _stages),
    ("bench_search", _search),
    ("bench_memory", _memory),
    ("bench_accuracy", _accuracy),
    ("bench_calibrate", _calibrate),
    ("bench_milvus", _milvus),
]


def headline_rows(reports: list[Report]) -> list[Row]:
    by_name = {report.name: report for report in reports}
    rows: list[Row] = []
    for name, extract in ROWS:
        report = by_name.get(name)
        if report is not None:
            rows.extend(extract(report))
    return rows


def headline_markdown(reports: list[Report]) -> str:
    lines = ["| what | result | command |", "|---|---|---|"]
    lines += [f"| {what} | {result} | `{command}` |" for what, result, command in headline_rows(reports)]
    return "\n".join(lines)


def update_readme(path: Path, reports: list[Report]) -> bool:
    """Replace the table between the markers; False (file untouched) when the markers are missing."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        return False
    block = f"{START}\n{headline_markdown(reports)}\n{END}"
    path.write_text(pattern.sub(lambda _: block, text, count=1), encoding="utf-8")
    return True

"""Hostile-input benchmark: the issue-12 probe replayed against a real server, as a report (not a test).

A real ``faces serve`` (SQLite, API keys on) gets, in order: a warm-up gallery of LFW people; a
well-behaved client identifying LFW photos alone (idle latency) and again while another client keeps
enrolling giant PNGs (loaded latency; target: loaded p99 < 3x idle p99); then every hostile case
(giant PNG/JPEG, too many images and pixels, deep/huge/surrogate metadata, NUL strings, huge offsets,
bad source_hash, big JSON, unauthenticated big bodies, /metrics without a key, keep-alive after an
error). Per case: the status histogram, 5xx (target 0), transport errors, server CPU seconds and wall
time; per server: peak and settled RSS. ``--baseline-root`` runs the same against another checkout
(e.g. the commit before a change) in the same run, side by side.

    python -m bench.bench_hostile
    git archive <commit> | tar -x -C /tmp/before && python -m bench.bench_hostile --baseline-root /tmp/before

``--engine-outage`` runs instead the vector-engine outage lane (bench/hostile_outage.py): a server on
a real Milvus server that is stopped while clients enroll and retry, then started again.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench.common import (
    DEFAULT_LFW_ROOT,
    REPO_ROOT,
    RESULTS_DIR,
    LatencyStats,
    Report,
    Table,
    finish_report,
    fmt,
    rss_bytes,
    start_report,
)
from bench.server import ServerConfig, running

KEY = "bench-hostile-key"
COLLECTION = "hostile"
GIANT_SIDE = 6324  # 40.0 Mpx: just under the default FACES_MAX_IMAGE_PIXELS
GALLERY = ("Colin_Powell", "George_W_Bush", "Serena_Williams", "Tony_Blair", "Gerhard_Schroeder")
MIB = 1024 * 1024
TIMEOUT_S = 300.0
IDLE_WAIT_S = 40.0  # > the large-image worker's idle stop (service.runtime.lanes.LARGE_WORKER_IDLE_S)


@dataclass(slots=True)
class Inputs:
    """Everything the cases send, built once."""

    photos: list[bytes]  # LFW photos of enrolled people (the well-behaved client's probes)
    enroll_photos: list[bytes]
    giant_png: bytes
    giant_jpeg: bytes


@dataclass(slots=True)
class CaseResult:
    name: str
    what: str
    statuses: dict[str, int]
    server_errors: int  # 5xx other than the documented admission refusal (503 server_busy)
    busy_refusals: int  # 503 server_busy with Retry-After: the large-image lane was full
    transport_errors: int
    server_cpu_s: float
    wall_s: float
    rss_after_mib: float


@dataclass(slots=True)
class RunResult:
    label: str
    root: str
    cases: list[CaseResult] = field(default_factory=list)
    idle: LatencyStats | None = None
    loaded: LatencyStats | None = None
    giant_client_statuses: dict[str, int] = field(default_factory=dict)
    rss_ready_mib: float = 0.0
    rss_peak_mib: float = 0.0
    rss_settled_mib: float = 0.0
    rss_idle_mib: float = 0.0
    startup_s: float = 0.0

    @property
    def total_5xx(self) -> int:
        return sum(c.server_errors for c in self.cases) + _server_errors(self.giant_client_statuses)

    @property
    def total_busy(self) -> int:
        return sum(c.busy_refusals for c in self.cases) + self.giant_client_statuses.get(BUSY, 0)


BUSY = "503:server_busy"


def _server_errors(statuses: dict[str, int]) -> int:
    """5xx answers (a follow-up's too), but not the documented 503 server_busy refusal."""

    def is_5xx(status: str) -> bool:
        code = status.removeprefix("follow_up_")[:3]
        return code.isdigit() and code.startswith("5") and not status.endswith(BUSY)

    return sum(n for status, n in statuses.items() if is_5xx(status))


# -- inputs ------------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt_name: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt_name, **options)
    return buffer.getvalue()


def build_inputs(lfw_root: Path) -> Inputs:
    images = lfw_root / "images"

    def photo(person: str, n: int) -> bytes:
        return (images / person / f"{person}_{n:04d}.jpg").read_bytes()

    canvas = Image.new("RGB", (GIANT_SIDE, GIANT_SIDE), (128, 128, 128))
    with Image.open(images / "Colin_Powell" / "Colin_Powell_0001.jpg") as face:
        canvas.paste(face.convert("RGB"), (GIANT_SIDE // 2, GIANT_SIDE // 2))
    return Inputs(
        photos=[photo(p, 3) for p in GALLERY],
        enroll_photos=[photo(p, n) for p in GALLERY for n in (1, 2)],
        giant_png=_encode(canvas, "PNG", compress_level=9),
        giant_jpeg=_encode(canvas, "JPEG", quality=90),
    )


# -- helpers -----------------------------------------------------------------------------------


def _status(send: Callable[..., httpx.Response], *args: Any, **kwargs: Any) -> str:
    """The status of ``send(*args, **kwargs)`` (5xx with their problem code), or what failed on the wire."""
    try:
        response = send(*args, **kwargs)
        if response.status_code >= 500:
            with contextlib.suppress(ValueError, AttributeError):
                return f"{response.status_code}:{response.json().get('code', '?')}"
        return str(response.status_code)
    except httpx.TimeoutException:
        return "timeout"
    except httpx.TransportError:
        return "conn_error"


def _tree(pid: int) -> list[int]:
    """The process and its descendants (the server's large-image worker)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                pids += _tree(int(child))
    return pids


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of the server and its children (alive and reaped)."""
    total = 0.0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])
    return total / os.sysconf("SC_CLK_TCK")


def _rss(pid: int) -> tuple[int, int]:
    """(current, peak) resident bytes of the server plus its worker processes (peak: sum of peaks)."""
    current = peak = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            now, high = rss_bytes(member)
            current, peak = current + now, peak + high
    return current, peak


def _enroll_files(blobs: list[bytes], suffix: str) -> list[tuple[str, tuple[str, bytes, str]]]:
    media = {"png": "image/png", "jpg": "image/jpeg"}[suffix]
    return [("images", (f"{i}.{suffix}", blob, media)) for i, blob in enumerate(blobs)]


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"k": value}
    return value


@contextlib.contextmanager
def _client(url: str, *, key: bool = True) -> Iterator[httpx.Client]:
    headers = {"X-API-Key": KEY} if key else {}
    with httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_S) as client:
        yield client


# -- the cases ---------------------------------------------------------------------------------

Case = tuple[str, str, Callable[[str, Inputs], list[str]]]


def _giant_identify(kind: str) -> Callable[[str, Inputs], list[str]]:
    def run(url: str, inputs: Inputs) -> list[str]:
        data, name = (inputs.giant_png, "g.png") if kind == "png" else (inputs.giant_jpeg, "g.jpg")
        with _client(url) as client:
            path = f"/v1/collections/{COLLECTION}/identify"
            return [_status(lambda: client.post(path, files={"image": (name, data)})) for _ in range(3)]

    return run


def _giant_enroll_16(url: str, inputs: Inputs) -> list[str]:
    with _client(url) as client:
        files = _enroll_files([inputs.giant_png] * 16, "png")
        path = f"/v1/collections/{COLLECTION}/subjects/giant16/faces?create_subject=true"
        return [_status(lambda: client.post(path, files=files))]


def _giant_enroll_concurrent(url: str, inputs: Inputs) -> list[str]:
    def one(i: int) -> str:
        with _client(url) as client:
            files = _enroll_files([inputs.giant_png] * 3, "png")
            path = f"/v1/collections/{COLLECTION}/subjects/giant-c{i}/faces?create_subject=true"
            return _status(lambda: client.post(path, files=files))

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(4)))


def _too_many_images(url: str, inputs: Inputs) -> list[str]:
    with _client(url) as client:
        files = _enroll_files((inputs.enroll_photos * 2)[:17], "jpg")
        path = f"/v1/collections/{COLLECTION}/subjects/many/faces?create_subject=true"
        return [_status(lambda: client.post(path, files=files))]


def _metadata(kind: str) -> Callable[[str, Inputs], list[str]]:
    def run(url: str, inputs: Inputs) -> list[str]:
        path = f"/v1/collections/{COLLECTION}/subjects"
        with _client(url) as client:
            if kind == "deep":
                body = json.dumps({"subject_id": "deep", "metadata": _nested(300)}).encode()
            elif kind == "surrogate":
                body = b'{"subject_id": "surrogate", "metadata": {"k": "\\ud800"}}'
            else:
                body = json.dumps({"subject_id": "huge", "metadata": {"blob": "x" * (5 * MIB)}}).encode()
            headers = {"content-type": "application/json"}
            statuses = [_status(lambda: client.post(path, content=body, headers=headers))]
            # Whatever was stored must still be readable, alone and in the collection's listing.
            statuses.append(_status(lambda: client.get(f"{path}?limit=1000")))
            return statuses

    return run


def _nul_strings(url: str, inputs: Inputs) -> list[str]:
    with _client(url) as client:
        return [
            _status(lambda: client.post("/v1/collections", json={"name": "nul", "description": "a\x00b"})),
            _status(
                lambda: client.post(
                    f"/v1/collections/{COLLECTION}/subjects", json={"subject_id": "nul", "name": "a\x00b"}
                )
            ),
            _status(
                lambda: client.post(
                    f"/v1/collections/{COLLECTION}/subjects/nulfile/faces?create_subject=true",
                    files=[("images", ("a\x00b.jpg", inputs.enroll_photos[0], "image/jpeg"))],
                )
            ),
        ]


def _huge_offsets(url: str, inputs: Inputs) -> list[str]:
    with _client(url) as client:
        return [
            _status(client.get, f"/v1/collections/{COLLECTION}/subjects", params={"offset": offset})
            for offset in (2**63, 2**63 - 1, 2**64, 10**30)
        ]


def _bad_source_hash(url: str, inputs: Inputs) -> list[str]:
    path = f"/v1/collections/{COLLECTION}/subjects/hash/faces?create_subject=true"
    with _client(url) as client:
        return [
            _status(
                client.post,
                path,
                data={"source_hash": bad},
                files=[("images", ("p.jpg", inputs.enroll_photos[1], "image/jpeg"))],
            )
            for bad in ("z" * 65, "A" * 64, "not-a-hash")
        ]


def _big_json(url: str, inputs: Inputs) -> list[str]:
    body = json.dumps({"name": "big", "description": "x" * (20 * MIB)}).encode()
    with _client(url) as client:
        return [
            _status(
                lambda: client.post(
                    "/v1/collections", content=body, headers={"content-type": "application/json"}
                )
            )
        ]


def _unauthenticated(kind: str) -> Callable[[str, Inputs], list[str]]:
    def run(url: str, inputs: Inputs) -> list[str]:
        with _client(url, key=False) as client:
            if kind == "json":
                body = b'{"name": "' + b"x" * (38 * MIB) + b'"}'
                send = lambda: client.post(  # noqa: E731
                    "/v1/collections", content=body, headers={"content-type": "application/json"}
                )
            else:
                blob = b"\xff\xd8\xff" + bytes(100 * MIB)
                send = lambda: client.post(  # noqa: E731
                    f"/v1/collections/{COLLECTION}/subjects/x/faces", files={"images": ("x.jpg", blob)}
                )
            return [_status(send)]

    return run


def _metrics_without_key(url: str, inputs: Inputs) -> list[str]:
    with _client(url, key=False) as client:
        return [_status(lambda: client.get("/metrics"))]


def _keepalive_after_error(url: str, inputs: Inputs) -> list[str]:
    """On one keep-alive connection: a request that failed on the probed server, then a normal one."""
    statuses: list[str] = []
    with _client(url) as client:
        path = f"/v1/collections/{COLLECTION}/subjects"
        for _ in range(10):
            statuses.append(_status(client.get, path, params={"offset": 2**63}))
            follow = _status(client.get, "/v1/collections")
            statuses.append(follow if follow == "200" else f"follow_up_{follow}")
    return statuses


CASES: list[Case] = [
    ("giant_png_identify", f"3 x identify, {GIANT_SIDE}² PNG (40 Mpx)", _giant_identify("png")),
    ("giant_jpeg_identify", f"3 x identify, {GIANT_SIDE}² JPEG", _giant_identify("jpeg")),
    ("giant_png_enroll_16", "1 enroll, 16 giant PNGs (640 Mpx)", _giant_enroll_16),
    ("giant_png_enroll_4x3", "4 concurrent enrolls, 3 giant PNGs each", _giant_enroll_concurrent),
    ("too_many_images", "1 enroll, 17 LFW photos", _too_many_images),
    ("metadata_deep", "subject metadata nested 300 deep, then list", _metadata("deep")),
    ("metadata_surrogate", "metadata with a lone surrogate, then list", _metadata("surrogate")),
    ("metadata_5mb", "5 MB metadata, then list", _metadata("huge")),
    ("nul_strings", "NUL in description, name, filename", _nul_strings),
    ("huge_offsets", "offset 2^63, 2^63-1, 2^64, 10^30", _huge_offsets),
    ("bad_source_hash", "source_hash 65 chars / uppercase / not hex", _bad_source_hash),
    ("big_json_20mib", "20 MiB JSON body (with key)", _big_json),
    ("unauth_json_38mib", "38 MiB JSON, no key", _unauthenticated("json")),
    ("unauth_multipart_100mib", "100 MiB multipart, no key", _unauthenticated("multipart")),
    ("metrics_without_key", "/metrics, no key", _metrics_without_key),
    (
        "keepalive_after_error",
        "10 x (offset 2^63, then a normal request) on one connection",
        _keepalive_after_error,
    ),
]


# -- latency of a well-behaved client ----------------------------------------------------------


def _identify_latencies(url: str, photos: list[bytes], seconds: float) -> list[float]:
    """Identify LFW photos one after another for ``seconds``; each request's latency."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    with _client(url) as client:
        path = f"/v1/collections/{COLLECTION}/identify"
        i = 0
        while time.perf_counter() < deadline:
            i += 1
            started = time.perf_counter()
            response = client.post(path, files={"image": ("p.jpg", photos[i % len(photos)], "image/jpeg")})
            samples.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(
                    f"well-behaved identify failed: {response.status_code} {response.text[:300]}"
                )
            if time.perf_counter() > deadline:
                break
    return samples


def _loaded_latencies(url: str, inputs: Inputs, seconds: float) -> tuple[list[float], dict[str, int]]:
    """The well-behaved client again, while a giant-image client enrolls 4 giant PNGs per request."""
    stop = threading.Event()
    statuses: Counter[str] = Counter()
    started = threading.Event()

    def giant_client() -> None:
        with _client(url) as client:
            files = _enroll_files([inputs.giant_png] * 4, "png")
            path = f"/v1/collections/{COLLECTION}/subjects/giant-load/faces?create_subject=true"
            while not stop.is_set():
                started.set()
                statuses[_status(lambda: client.post(path, files=files))] += 1

    thread = threading.Thread(target=giant_client, daemon=True)
    thread.start()
    started.wait()
    time.sleep(0.5)  # its first images are being decoded
    try:
        samples = _identify_latencies(url, inputs.photos, seconds)
    finally:
        stop.set()
        thread.join()
    return samples, dict(statuses)


# -- one server --------------------------------------------------------------------------------


def run_server(label: str, root: Path | None, inputs: Inputs, *, phase_s: float) -> RunResult:
    result = RunResult(label=label, root=str(root or "."))
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        config = ServerConfig(
            data_dir=Path(tmp), repo_root=root, extra_env={"FACES_API_KEYS": KEY, "FACES_LOG_LEVEL": "ERROR"}
        )
        with running(config) as server:
            result.startup_s = server.startup_s
            _warm_up(server.url, inputs)
            result.rss_ready_mib = _rss(server.pid)[0] / MIB
            print(f"[{label}] idle latency", flush=True)
            result.idle = LatencyStats.from_seconds(_identify_latencies(server.url, inputs.photos, phase_s))
            print(f"[{label}] latency under a giant-image client", flush=True)
            loaded, result.giant_client_statuses = _loaded_latencies(server.url, inputs, 2 * phase_s)
            result.loaded = LatencyStats.from_seconds(loaded)
            for name, what, case in CASES:
                print(f"[{label}] {name}", flush=True)
                cpu0, wall0 = _cpu_s(server.pid), time.perf_counter()
                statuses = case(server.url, inputs)
                histogram = Counter(statuses)
                result.cases.append(
                    CaseResult(
                        name=name,
                        what=what,
                        statuses=dict(sorted(histogram.items())),
                        server_errors=_server_errors(histogram),
                        busy_refusals=histogram.get(BUSY, 0),
                        transport_errors=sum(
                            n for s, n in histogram.items() if s.endswith(("conn_error", "timeout"))
                        ),
                        server_cpu_s=_cpu_s(server.pid) - cpu0,
                        wall_s=time.perf_counter() - wall0,
                        rss_after_mib=_rss(server.pid)[0] / MIB,
                    )
                )
            time.sleep(5.0)  # let in-flight work finish and memory settle
            current, peak = _rss(server.pid)
            result.rss_settled_mib, result.rss_peak_mib = current / MIB, peak / MIB
            print(f"[{label}] idle {IDLE_WAIT_S:.0f} s (the large-image worker stops)", flush=True)
            time.sleep(IDLE_WAIT_S)
            result.rss_idle_mib = _rss(server.pid)[0] / MIB
    return result


def _warm_up(url: str, inputs: Inputs) -> None:
    with _client(url) as client:
        client.post("/v1/collections", json={"name": COLLECTION}).raise_for_status()
        for i, person in enumerate(GALLERY):
            files = _enroll_files(inputs.enroll_photos[2 * i : 2 * i + 2], "jpg")
            response = client.post(
                f"/v1/collections/{COLLECTION}/subjects/{person}/faces?create_subject=true", files=files
            )
            response.raise_for_status()
        for photo in inputs.photos:
            client.post(f"/v1/collections/{COLLECTION}/identify", files={"image": photo}).raise_for_status()


# -- report ------------------------------------------------------------------------------------


def _histogram(statuses: dict[str, int]) -> str:
    return " ".join(f"{status}×{n}" for status, n in statuses.items())


def case_table(runs: list[RunResult]) -> Table:
    columns = ["case", "what"]
    for run in runs:
        columns += [f"statuses ({run.label})", "5xx", "server CPU s", "wall s", "RSS after, MiB"]
    table = Table("Hostile inputs against a real server (SQLite, API keys on)", columns)
    for i, (name, what, _) in enumerate(CASES):
        row: list[object] = [name, what]
        for run in runs:
            case = run.cases[i]
            row += [
                _histogram(case.statuses),
                case.server_errors,
                fmt(case.server_cpu_s, 2),
                fmt(case.wall_s, 2),
                fmt(case.rss_after_mib, 0),
            ]
        table.add(*row)
    return table


def summary_table(runs: list[RunResult], giant_png_bytes: int) -> Table:
    table = Table("Server under hostile load", ["", *(run.label for run in runs)])

    def row(name: str, value: Callable[[RunResult], str]) -> None:
        table.add(name, *(value(run) for run in runs))

    def ratio(run: RunResult) -> float:
        assert run.idle is not None
        assert run.loaded is not None
        return run.loaded.p99_ms / run.idle.p99_ms

    row("5xx answers (target 0; 503 server_busy not counted)", lambda r: str(r.total_5xx))
    row("503 server_busy + Retry-After (large-image lane full)", lambda r: str(r.total_busy))
    row("RSS after warm-up, MiB", lambda r: fmt(r.rss_ready_mib, 0))
    row("peak RSS (server + workers, sum of peaks), MiB", lambda r: fmt(r.rss_peak_mib, 0))
    row("settled RSS 5 s after the cases, MiB", lambda r: fmt(r.rss_settled_mib, 0))
    row(f"RSS after {IDLE_WAIT_S:.0f} s idle, MiB", lambda r: fmt(r.rss_idle_mib, 0))
    row(
        "identify alone: p50 / p99 ms",
        lambda r: f"{fmt(r.idle.p50_ms, 0)} / {fmt(r.idle.p99_ms, 0)}" if r.idle else "-",
    )
    row(
        "identify beside a giant-image client: p50 / p99 ms",
        lambda r: f"{fmt(r.loaded.p50_ms, 0)} / {fmt(r.loaded.p99_ms, 0)}" if r.loaded else "-",
    )
    row("p99 ratio (target < 3)", lambda r: f"{ratio(r):.2f}" + (" ✓" if ratio(r) < 3 else " ✗"))
    row("giant-image client's answers meanwhile", lambda r: _histogram(r.giant_client_statuses))
    table.notes.append(
        "the well-behaved client identifies LFW photos one after another; the giant-image client "
        f"enrolls 4 flat {GIANT_SIDE}² PNGs (40 Mpx, {giant_png_bytes // 1024} KB each) per request in a loop"
    )
    return table


OUTAGE_START, OUTAGE_END = (
    "<!-- bench:outage (python -m bench.bench_hostile --engine-outage rewrites this block) -->",
    "<!-- /bench:outage -->",
)
README_START = "<!-- bench:hostile (python -m bench.bench_hostile rewrites this block) -->"
README_END = "<!-- /bench:hostile -->"


def readme_markdown(report: Report, runs: list[RunResult]) -> str:
    """The README's reliability tables: the summary, and per case the statuses of every run."""
    lines = [f"`{report.command}`", ""]
    load = (report.machine.get("loadavg_start") or ["?"])[0]
    lines += [
        f"{report.machine.get('cpu_model') or 'CPU'}, {report.machine.get('affinity_cpus', '?')} cores, "
        f"started {report.started_at}, 1-min load average at start {load}.",
        "",
    ]
    summary = report.tables[0]
    lines += [summary.to_markdown(), ""]
    lines += [f"- {note}" for note in summary.notes]
    columns = ["case", "what"]
    for run in runs:
        columns += [f"{run.label}: statuses", "5xx", "server CPU s"]
    cases = Table("", columns)
    for i, (name, what, _) in enumerate(CASES):
        row: list[object] = [f"`{name}`", what]
        for run in runs:
            case = run.cases[i]
            row += [_histogram(case.statuses), case.server_errors, fmt(case.server_cpu_s, 2)]
        cases.add(*row)
    lines += ["", cases.to_markdown()]
    return "\n".join(lines)


def update_readme(path: Path, report: Report, runs: list[RunResult]) -> bool:
    """Replace the block between the markers; False (file untouched) when they are missing."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        return False
    block = f"{README_START}\n{readme_markdown(report, runs)}\n{README_END}"
    path.write_text(pattern.sub(lambda _: block, text, count=1), encoding="utf-8")
    return True


def _run_from_raw(data: dict[str, Any]) -> RunResult:
    fields = dict(data)
    fields["cases"] = [CaseResult(**case) for case in data["cases"]]
    for phase in ("idle", "loaded"):
        fields[phase] = LatencyStats(**data[phase]) if data.get(phase) else None
    return RunResult(**fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lfw-root", type=Path, default=DEFAULT_LFW_ROOT)
    parser.add_argument(
        "--baseline-root",
        type=Path,
        default=None,
        help="another checkout to run the same against, side by side",
    )
    parser.add_argument("--baseline-label", default="before", help="its column title (default %(default)s)")
    parser.add_argument("--label", default="this checkout", help="this checkout's column title")
    parser.add_argument(
        "--no-readme", dest="readme", action="store_false", help="leave README.md's reliability block alone"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild the tables from bench/results/bench_hostile.json"
    )
    parser.add_argument(
        "--engine-outage",
        action="store_true",
        help="run the vector-engine outage lane (a real Milvus server) instead of the hostile inputs",
    )
    parser.add_argument(
        "--phase-seconds",
        type=float,
        default=10.0,
        help="seconds of idle identify requests (twice that beside the giant-image client)",
    )
    args = parser.parse_args(argv)
    if args.report_only:
        saved = Report.load(RESULTS_DIR / "bench_hostile.json")
        runs = [_run_from_raw(run) for run in saved.raw["runs"]]
        saved.tables = [summary_table(runs, int(saved.raw["giant_png_bytes"])), case_table(runs)]
        saved.save()
        saved.print()
        if args.readme:
            update_readme(REPO_ROOT / "README.md", saved, runs)
        return 0
    if args.engine_outage:
        return _engine_outage(args, argv)
    report = start_report("bench_hostile", argv)
    started = time.perf_counter()
    inputs = build_inputs(args.lfw_root)
    runs = [run_server(args.label, None, inputs, phase_s=args.phase_seconds)]
    if args.baseline_root is not None:
        runs.append(
            run_server(
                args.baseline_label,
                args.baseline_root.resolve(),
                inputs,
                phase_s=args.phase_seconds,
            )
        )
    report.tables = [summary_table(runs, len(inputs.giant_png)), case_table(runs)]
    report.raw = {
        "giant_png_bytes": len(inputs.giant_png),
        "giant_jpeg_bytes": len(inputs.giant_jpeg),
        "runs": [asdict(run) for run in runs],
    }
    finish_report(report, started)
    if args.readme and update_readme(REPO_ROOT / "README.md", report, runs):
        print("README.md reliability tables rewritten")
    return 0


def _engine_outage(args: argparse.Namespace, argv: list[str] | None) -> int:
    from bench.hostile_outage import run_outage_lane

    report = start_report("bench_hostile", argv, tag="outage")
    started = time.perf_counter()
    checkouts: list[tuple[str, Path | None]] = [(args.label, None)]
    if args.baseline_root is not None:
        checkouts.insert(0, (args.baseline_label, args.baseline_root.resolve()))
    runs, table = run_outage_lane(args.lfw_root, checkouts)
    report.tables = [table]
    report.raw = {"runs": [asdict(run) for run in runs]}
    finish_report(report, started)
    if args.readme and _update_block(REPO_ROOT / "README.md", OUTAGE_START, OUTAGE_END, report):
        print("README.md engine-outage table rewritten")
    return 0


def _update_block(path: Path, start: str, end: str, report: Report) -> bool:
    """Replace a marked README block with the report's command and tables; False when unmarked."""
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        return False
    load = (report.machine.get("loadavg_start") or ["?"])[0]
    body = [
        f"`{report.command}`",
        "",
        f"{report.machine.get('cpu_model') or 'CPU'}, {report.machine.get('affinity_cpus', '?')} cores, "
        f"started {report.started_at}, 1-min load average at start {load}.",
        "",
        *(table.to_markdown() for table in report.tables),
    ]
    block = "\n".join([start, *body, end])
    path.write_text(pattern.sub(lambda _: block, text, count=1), encoding="utf-8")
    return True


if __name__ == "__main__":
    raise SystemExit(main())

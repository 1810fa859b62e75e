"""Shared plumbing for the benchmarks: timing statistics, machine facts, result files and tables.

Every benchmark writes one JSON report under ``bench/results/`` holding the exact command that
produced it, so any number copied into the README can be traced back to a run.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEFAULT_LFW_ROOT = REPO_ROOT.parent / "shared" / "data" / "lfw"
PYTHON = "python"  # how commands are written in reports; the interpreter path is machine-specific


@dataclass(slots=True)
class Table:
    """One printable/markdown table; cells are already formatted strings."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(cell) for cell in cells])

    def to_text(self) -> str:
        widths = [len(c) for c in self.columns]
        for row in self.rows:
            widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
        lines = [self.title, "  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))]
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in self.rows]
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        lines = [
            "| " + " | ".join(self.columns) + " |",
            "|" + "|".join("---" for _ in self.columns) + "|",
        ]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Table:
        return cls(
            title=str(data["title"]),
            columns=[str(c) for c in data["columns"]],
            rows=[[str(c) for c in row] for row in data["rows"]],
            notes=[str(n) for n in data.get("notes", [])],
        )


@dataclass(slots=True)
class Report:
    """What one benchmark run produced: tables for humans, ``raw`` for machines."""

    name: str
    command: str
    tables: list[Table] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    duration_s: float = 0.0

    def save(self, path: Path | None = None) -> Path:
        target = path or RESULTS_DIR / f"{self.name}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=_json_default) + "\n")
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: Path) -> Report:
        data = json.loads(path.read_text())
        return cls(
            name=str(data["name"]),
            command=str(data["command"]),
            tables=[Table.from_dict(t) for t in data.get("tables", [])],
            raw=dict(data.get("raw", {})),
            machine=dict(data.get("machine", {})),
            started_at=str(data.get("started_at", "")),
            duration_s=float(data.get("duration_s", 0.0)),
        )

    def print(self) -> None:
        for table in self.tables:
            print()
            print(table.to_text())
        print(f"\ncommand: {self.command}")


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def start_report(
    name: str, argv: Sequence[str] | None = None, module: str | None = None, tag: str = ""
) -> Report:
    """A report stamped with the command line that reproduces it; ``tag`` saves ``<name>-<tag>.json``
    beside the default run instead of replacing it."""
    args = list(sys.argv[1:] if argv is None else argv)
    target = module or f"bench.{name}"
    command = " ".join([PYTHON, "-m", target, *(shlex.quote(a) for a in args)])
    return Report(
        name=f"{name}-{tag}" if tag else name,
        command=command,
        machine=machine_info(),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def load_average() -> tuple[float, float, float]:
    """1/5/15-minute load: other work on the box makes timings noisy, so every report records it."""
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def cpu_busy_fraction(seconds: float = 1.0) -> float:
    """Share of all cores busy over ``seconds``, from /proc/stat: the other work on the box right now.

    The load average cannot tell that apart from a benchmark's own load (a server plus a load
    generator) or the tail of the previous benchmark, so the start of every run samples this too.
    """

    def snapshot() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    try:
        total0, idle0 = snapshot()
        time.sleep(seconds)
        total1, idle1 = snapshot()
    except (OSError, ValueError, IndexError):
        return float("nan")
    total = total1 - total0
    return 1.0 - (idle1 - idle0) / total if total > 0 else 0.0


def finish_report(report: Report, started: float, path: Path | None = None) -> Path:
    report.duration_s = round(time.perf_counter() - started, 1)
    report.machine["loadavg_end"] = load_average()
    busy = report.machine.get("cpu_busy_at_start")
    if isinstance(busy, float) and busy > 0.25:
        report.tables[-1].notes.append(
            f"other work used {100 * busy:.0f}% of the CPU when the run started: timings are pessimistic"
        )
    path = report.save(path)
    report.print()
    print(f"saved {path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
    return path


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Latency distribution in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, samples: Sequence[float] | NDArray[np.float64]) -> LatencyStats:
        values = np.asarray(samples, dtype=np.float64) * 1000.0
        if values.size == 0:
            return cls(0, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"))
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return cls(
            count=int(values.size),
            mean_ms=float(values.mean()),
            p50_ms=float(p50),
            p90_ms=float(p90),
            p99_ms=float(p99),
            max_ms=float(values.max()),
        )


def fmt(value: float, digits: int = 3) -> str:
    """Significant-digit formatting that keeps tables narrow."""
    if value != value:  # NaN
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10**digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt_count(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size and n % (size // 10) == 0:
            text = f"{n / size:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return str(n)


def parse_count(text: str) -> int:
    """``10k`` / ``1M`` / ``2500`` → int (for size flags)."""
    text = text.strip().lower().replace("_", "")
    scale = 1
    if text.endswith("k"):
        scale, text = 1_000, text[:-1]
    elif text.endswith("m"):
        scale, text = 1_000_000, text[:-1]
    return int(float(text) * scale)


def parse_counts(text: str) -> list[int]:
    return [parse_count(part) for part in text.split(",") if part.strip()]


def random_unit_vectors(n: int, dim: int, seed: int, chunk: int = 262_144) -> NDArray[np.float32]:
    """Synthetic L2-normalised embeddings (isotropic Gaussian directions), built in chunks to cap memory."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def rss_bytes(pid: int | None = None) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in bytes, read from /proc (Linux only)."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    fields: dict[str, int] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(rest.split()[0]) * 1024
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def machine_info() -> dict[str, Any]:
    """Enough about the machine to know whether two reports are comparable."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "loadavg_start": load_average(),
        "cpu_busy_at_start": round(cpu_busy_fraction(), 3),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total_gib"] = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    for module in ("numpy", "faiss", "onnxruntime", "cv2", "dlib", "fastapi", "uvicorn"):
        info[f"{module}_version"] = _module_version(module)
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        )
        info["git_rev"] = rev.stdout.strip() or "uncommitted"
    except (OSError, subprocess.TimeoutExpired):
        info["git_rev"] = "unknown"
    return info


def _module_version(module: str) -> str | None:
    from importlib import import_module
    from importlib.metadata import PackageNotFoundError, version

    dist = {"cv2": "opencv-python-headless", "faiss": "faiss-cpu"}.get(module, module)
    try:
        return version(dist)
    except PackageNotFoundError:
        pass
    try:
        return str(getattr(import_module(module), "__version__", "present"))
    except ImportError:
        return None


def measure_copy_bandwidth(size_bytes: int = 1 << 30, repeats: int = 5) -> float:
    """Main-memory bandwidth in bytes/s from a large single-threaded numpy copy (STREAM "copy":
    bytes read + bytes written), best of ``repeats`` so page faults and frequency ramp-up are excluded."""
    src = np.ones(size_bytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault both buffers in before timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * src.nbytes / best


class NoStore:
    """An ``EmbeddingSource`` with nothing in it: for engines a benchmark fills directly (nothing to
    rebuild or reconcile against)."""

    def collection_revision(self, collection_pk: int) -> int:
        return 0

    def face_count(self, collection_pk: int) -> int:
        return 0

    def iter_embeddings(
        self, collection_pk: int, batch_size: int = 0
    ) -> Iterator[tuple[NDArray[np.int64], NDArray[np.float32]]]:
        return iter(())

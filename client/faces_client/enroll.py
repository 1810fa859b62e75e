"""Batch enrollment over the REST API: ``faces enroll ROOT --collection C`` (also ``faces-enroll``).

ROOT holds one folder per subject (the folder name is the subject id) with that subject's images.
Uploads go one image per request so every file gets its own exact outcome, a bounded number at a
time, through ``FacesClient`` (which retries what is safe to repeat). Runs are resumable: each file
is keyed by its sha256, sent as ``source_hash`` and stored by the server, so a re-run skips files
the subject already has; each upload also carries an ``Idempotency-Key`` derived from that hash and
its target, the same on every retry and re-run. This module is the command: folder scan, report,
progress; the HTTP lives in the client.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

import httpx
from tqdm import tqdm

from faces_client.client import FacesClient, FaceSelection, RetryPolicy
from faces_client.errors import ApiError, ConflictError, FacesError, NotFoundError
from faces_client.models import EnrollResult

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
# Client errors that are the file's fault (bad or unusable image), not the run's.
FILE_REJECTION_STATUSES = frozenset({413, 415, 422})
EXIT_OK = 0
EXIT_FAILED = 1

ProgressMode = Literal["auto", "bar", "lines", "none"]


@dataclass(frozen=True)
class EnrollOptions:
    """Everything one enrollment run needs; built from the command line or by tests."""

    root: Path
    collection: str
    base_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    concurrency: int = 4
    face_selection: FaceSelection = "strict"
    retries: int = 5
    timeout_s: float = 60.0
    backoff_base_s: float = 0.5
    # auto: a bar on a terminal, a line every progress_interval_s otherwise (a redirected stderr).
    progress: ProgressMode = "auto"
    progress_interval_s: float = 10.0


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file; ``code``/``detail`` explain rejections, failures and skips."""

    path: str
    subject_id: str | None
    sha256: str | None
    face_id: str | None = None
    code: str | None = None
    detail: str | None = None
    attempts: int = 0


@dataclass
class EnrollmentReport:
    """Per-file outcomes grouped the way an operator reads them; serialised as the JSON report."""

    collection: str
    base_url: str
    root: str
    started_at: str = ""
    finished_at: str = ""
    duration_s: float = 0.0
    enrolled: list[FileOutcome] = field(default_factory=list)
    skipped: list[FileOutcome] = field(default_factory=list)
    rejected: list[FileOutcome] = field(default_factory=list)
    failed: list[FileOutcome] = field(default_factory=list)
    ignored: list[FileOutcome] = field(default_factory=list)
    # Subjects this run created and removed again because none of their files could be enrolled.
    removed_subjects: list[str] = field(default_factory=list)
    # The collection, when this run created it and removed it again for the same reason.
    removed_collection: str | None = None
    # Set when the run could not start (server down, bad key...): nothing was attempted.
    fatal_error: str | None = None

    @property
    def ok(self) -> bool:
        """Rejections are the data's verdict, not a failure of the run."""
        return self.fatal_error is None and not self.failed

    def counts(self) -> dict[str, int]:
        return {
            "enrolled": len(self.enrolled),
            "skipped": len(self.skipped),
            "rejected": len(self.rejected),
            "failed": len(self.failed),
            "ignored": len(self.ignored),
        }

    def to_json(self) -> dict[str, Any]:
        def outcomes(items: list[FileOutcome]) -> list[dict[str, Any]]:
            return [
                {k: v for k, v in dataclasses.asdict(item).items() if v is not None}
                for item in sorted(items, key=lambda o: o.path)
            ]

        return {
            "collection": self.collection,
            "base_url": self.base_url,
            "root": self.root,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": round(self.duration_s, 3),
            "ok": self.ok,
            "fatal_error": self.fatal_error,
            "counts": self.counts(),
            "rejection_reasons": dict(Counter(o.code or "unknown" for o in self.rejected)),
            "enrolled": outcomes(self.enrolled),
            "skipped": outcomes(self.skipped),
            "rejected": outcomes(self.rejected),
            "failed": outcomes(self.failed),
            "ignored": outcomes(self.ignored),
            "removed_empty_subjects": sorted(self.removed_subjects),
            "removed_empty_collection": self.removed_collection,
        }

    def summary(self, *, max_listed: int = 20) -> str:
        counts = self.counts()
        lines = [
            f"Enrollment into collection {self.collection!r} at {self.base_url} ({self.duration_s:.1f} s):",
            "  " + ", ".join(f"{name} {n}" for name, n in counts.items()),
        ]
        if self.fatal_error:
            lines.append(f"  run aborted: {self.fatal_error}")
        if self.removed_subjects:
            lines.append(
                f"  {len(self.removed_subjects)} subject(s) not kept, no file of theirs could be enrolled: "
                + ", ".join(sorted(self.removed_subjects)[:max_listed])
            )
        if self.removed_collection:
            lines.append(
                f"  collection {self.removed_collection!r} not kept: this run created it and enrolled nothing"
            )
        reasons = Counter(o.code or "unknown" for o in self.rejected)
        if reasons:
            lines.append("  rejected by reason: " + ", ".join(f"{c} {n}" for c, n in reasons.most_common()))
        for title, items in (("rejected", self.rejected), ("failed", self.failed)):
            for item in sorted(items, key=lambda o: o.path)[:max_listed]:
                lines.append(f"  {title}: {item.path}: {item.code}: {item.detail}")
            if len(items) > max_listed:
                lines.append(f"  ... {len(items) - max_listed} more {title}, see the JSON report")
        return "\n".join(lines)


@dataclass(frozen=True)
class SubjectFiles:
    subject_id: str
    files: tuple[Path, ...]


def scan_tree(root: Path) -> tuple[list[SubjectFiles], list[FileOutcome]]:
    """Subjects (one per sub-folder) with their image files, and the entries that are not enrolled.

    Hidden entries, loose files at the top and files without an image suffix are reported as
    ignored rather than uploaded; files with an image suffix go to the server, which is the judge of
    whether they really are usable images.
    """
    subjects: list[SubjectFiles] = []
    ignored: list[FileOutcome] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            ignored.append(
                FileOutcome(
                    str(entry),
                    None,
                    None,
                    code="not_in_subject_folder",
                    detail="Files directly under ROOT belong to no subject.",
                )
            )
            continue
        files: list[Path] = []
        for path in sorted(entry.rglob("*")):
            if path.is_dir() or any(part.startswith(".") for part in path.relative_to(entry).parts):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                files.append(path)
            else:
                detail = f"Only {', '.join(sorted(IMAGE_SUFFIXES))} files are sent."
                ignored.append(
                    FileOutcome(str(path), entry.name, None, code="not_an_image_suffix", detail=detail)
                )
        if files:
            subjects.append(SubjectFiles(entry.name, tuple(files)))
    return subjects, ignored


def idempotency_key(collection: str, subject_id: str, sha256: str, face_selection: str) -> str:
    """The same for one file's upload to one target on every retry and every re-run."""
    target = json.dumps([collection, subject_id, sha256, face_selection])
    return "faces-enroll-" + hashlib.sha256(target.encode()).hexdigest()[:40]


# ---------------------------------------------------------------------------------------- progress


class Progress(Protocol):
    def update(self, counts: dict[str, int]) -> None: ...

    def close(self) -> None: ...


class NoProgress:
    def update(self, counts: dict[str, int]) -> None:
        pass

    def close(self) -> None:
        pass


class BarProgress:
    """A tqdm bar: for a terminal only (it redraws in place with carriage returns)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self._bar = tqdm(total=total, unit="img", desc="enroll", file=stream)

    def update(self, counts: dict[str, int]) -> None:
        self._bar.update(1)
        self._bar.set_postfix(counts, refresh=False)

    def close(self) -> None:
        self._bar.close()


class LineProgress:
    """One plain line every ``interval_s`` and one at the end: for logs and redirected output."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._total = total
        self._stream = stream
        self._interval_s = interval_s
        self._clock = clock
        self._started = clock()
        self._last_line = self._started
        self._done = 0
        self._counts: dict[str, int] = {}

    def update(self, counts: dict[str, int]) -> None:
        self._done += 1
        self._counts = counts
        now = self._clock()
        if now - self._last_line >= self._interval_s:
            self._last_line = now
            self._write(now)

    def close(self) -> None:
        self._write(self._clock())

    def _write(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        left = (
            f", ~{(self._total - self._done) / rate:.0f} s left"
            if rate > 0 and self._done < self._total
            else ""
        )
        counts = ", ".join(f"{k} {v}" for k, v in self._counts.items())
        done = f"{self._done}/{self._total} files ({counts})"
        self._stream.write(f"enroll: {done} in {elapsed:.0f} s, {rate:.1f} files/s{left}\n")
        self._stream.flush()


def make_progress(mode: ProgressMode, total: int, stream: TextIO, interval_s: float) -> Progress:
    """``auto``: a bar when ``stream`` is a terminal, periodic lines when it is a file or a pipe."""
    if mode == "auto":
        mode = "bar" if stream.isatty() else "lines"
    if mode == "bar":
        return BarProgress(total, stream)
    if mode == "lines":
        return LineProgress(total, stream, interval_s)
    return NoProgress()


# ---------------------------------------------------------------------------------------------- run


class _Enrollment:
    """One run: state shared by the per-file workers (subject preparation, report, progress)."""

    def __init__(
        self, options: EnrollOptions, client: FacesClient, report: EnrollmentReport, progress: Progress
    ) -> None:
        self._options = options
        self._client = client
        self._report = report
        self._progress = progress
        self._lock = threading.Lock()
        self._subjects: dict[str, Future[dict[str, str]]] = {}
        self._claimed: dict[str, set[str]] = {}
        self._created: set[str] = set()

    def _enrolled_hashes(self, subject_id: str) -> dict[str, str] | None:
        """``source_hash`` → ``face_id`` of the subject's faces; None when the subject does not exist."""
        try:
            faces = self._client.list_faces(self._options.collection, subject_id)
        except NotFoundError as exc:
            if exc.code == "collection_not_found":
                raise
            return None
        return {f.source_hash: f.face_id for f in faces if f.source_hash}

    def _subject_hashes(self, subject_id: str) -> dict[str, str]:
        """Prepared once per subject, shared by its files: the hashes it already has."""
        with self._lock:
            future = self._subjects.get(subject_id)
            owner = future is None
            if future is None:
                future = self._subjects[subject_id] = Future()
        if owner:
            try:
                future.set_result(self._prepare_subject(subject_id))
            except Exception as exc:
                future.set_exception(exc)
        return future.result()

    def _prepare_subject(self, subject_id: str) -> dict[str, str]:
        hashes = self._enrolled_hashes(subject_id)
        if hashes is None:
            # Created up front so parallel uploads never race to create the same subject
            # (and removed at the end if none of its files could be enrolled).
            try:
                self._client.create_subject(self._options.collection, subject_id)
                with self._lock:
                    self._created.add(subject_id)
            except ConflictError:
                pass
            hashes = {}
        return hashes

    def remove_empty_subjects(self) -> None:
        """Delete the subjects this run created that ended with no face (every file rejected or failed):
        the API alone never leaves an empty subject behind, and neither does a batch run."""
        kept = {o.subject_id for o in self._report.enrolled}
        for subject_id in sorted(self._created - kept):
            try:
                if self._enrolled_hashes(subject_id) == {}:  # still empty: nobody enrolled into it meanwhile
                    self._client.delete_subject(self._options.collection, subject_id)
                    self._report.removed_subjects.append(subject_id)
            except FacesError:
                continue

    def _record(self, bucket: list[FileOutcome], outcome: FileOutcome) -> None:
        with self._lock:
            bucket.append(outcome)
            self._progress.update(self._report.counts())

    def enroll_file(self, subject_id: str, path: Path) -> None:
        try:
            self._enroll_file(subject_id, path)
        except Exception as exc:
            # A batch never dies on one file: whatever went wrong (an unparsable reply...) is reported.
            self._record(
                self._report.failed,
                FileOutcome(
                    str(path), subject_id, None, code=type(exc).__name__, detail=str(exc) or repr(exc)
                ),
            )

    def _enroll_file(self, subject_id: str, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            outcome = FileOutcome(str(path), subject_id, None, code="unreadable_file", detail=str(exc))
            self._record(self._report.failed, outcome)
            return
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            existing = self._subject_hashes(subject_id)
        except FacesError as exc:
            code, detail = _code_detail(exc)
            outcome = FileOutcome(
                str(path),
                subject_id,
                sha256,
                code=code,
                detail=f"subject could not be prepared: {detail}",
                attempts=getattr(exc, "attempts", 1),
            )
            self._record(self._report.failed, outcome)
            return
        with self._lock:
            claimed = self._claimed.setdefault(subject_id, set())
            duplicate = sha256 in existing or sha256 in claimed
            claimed.add(sha256)
        if duplicate:
            reason = "already_enrolled" if sha256 in existing else "duplicate_in_run"
            self._record(self._report.skipped, FileOutcome(str(path), subject_id, sha256, code=reason))
            return
        options = self._options
        try:
            enrollment = self._client.enroll(
                options.collection,
                subject_id,
                [(path.name, data)],
                source_hashes=[sha256],
                create_subject=True,
                face_selection=options.face_selection,
                idempotency_key=idempotency_key(
                    options.collection, subject_id, sha256, options.face_selection
                ),
            )
        except FacesError as exc:
            self._record_refusal(path, subject_id, sha256, exc)
            return
        if len(enrollment.results) != 1:
            detail = f"expected one result, got {len(enrollment.results)}"
            outcome = FileOutcome(str(path), subject_id, sha256, code="unexpected_response", detail=detail)
            self._record(self._report.failed, outcome)
            return
        self._record_result(path, subject_id, sha256, enrollment.results[0], enrollment.attempts)

    def _record_refusal(self, path: Path, subject_id: str, sha256: str, exc: FacesError) -> None:
        code, detail = _code_detail(exc)
        attempts = getattr(exc, "attempts", 1)
        if isinstance(exc, ApiError) and exc.status in FILE_REJECTION_STATUSES:
            # The server judged the file itself (undecodable, no usable face...): a rejection.
            results = exc.results or ()
            if len(results) == 1 and results[0].error is not None:
                code, detail = results[0].error.code, results[0].error.detail
            outcome = FileOutcome(str(path), subject_id, sha256, code=code, detail=detail, attempts=attempts)
            self._record(self._report.rejected, outcome)
            return
        outcome = FileOutcome(str(path), subject_id, sha256, code=code, detail=detail, attempts=attempts)
        self._record(self._report.failed, outcome)

    def _record_result(
        self, path: Path, subject_id: str, sha256: str, result: EnrollResult, attempts: int
    ) -> None:
        if result.status == "enrolled":
            outcome = FileOutcome(str(path), subject_id, sha256, face_id=result.face_id, attempts=attempts)
            self._record(self._report.enrolled, outcome)
        elif result.status == "rejected":
            error = result.error
            outcome = FileOutcome(
                str(path),
                subject_id,
                sha256,
                code=error.code if error else "rejected",
                detail=error.detail if error else "",
                attempts=attempts,
            )
            self._record(self._report.rejected, outcome)
        else:
            outcome = FileOutcome(
                str(path),
                subject_id,
                sha256,
                code="unexpected_response",
                detail=f"unknown result status {result.status!r}",
                attempts=attempts,
            )
            self._record(self._report.failed, outcome)


def _code_detail(exc: FacesError) -> tuple[str, str]:
    if isinstance(exc, ApiError):
        return exc.code, exc.detail
    return type(exc).__name__, str(exc)


def _ensure_collection(client: FacesClient, collection: str) -> bool:
    """True when this call created the collection."""
    try:
        client.get_collection(collection)
        return False
    except NotFoundError:
        pass
    try:
        client.create_collection(collection)
    except ConflictError:
        return False
    return True


def _remove_collection_if_empty(client: FacesClient, report: EnrollmentReport) -> None:
    """A collection this run created is not left behind when nothing could be enrolled into it."""
    try:
        if client.get_collection(report.collection).subject_count == 0:
            client.delete_collection(report.collection)
            report.removed_collection = report.collection
    except FacesError:
        return


def enroll(
    options: EnrollOptions,
    *,
    transport: httpx.BaseTransport | None = None,
    report: EnrollmentReport | None = None,
    progress_stream: TextIO | None = None,
) -> EnrollmentReport:
    """Run one enrollment; never raises for per-file or server problems, they land in the report.

    Pass ``report`` to keep what was done so far when the run is interrupted (KeyboardInterrupt is
    re-raised after the uploads in flight have finished).
    """
    if report is None:
        report = EnrollmentReport(options.collection, options.base_url, str(options.root))
    started = time.monotonic()
    report.started_at = datetime.now(UTC).isoformat(timespec="seconds")
    subjects, report.ignored = scan_tree(options.root)
    retry = RetryPolicy(retries=options.retries, backoff_base_s=options.backoff_base_s)
    try:
        with FacesClient(
            options.base_url,
            api_key=options.api_key,
            timeout_s=options.timeout_s,
            retry=retry,
            max_connections=options.concurrency,
            transport=transport,
        ) as client:
            _run(options, client, report, subjects, progress_stream or sys.stderr)
    finally:
        report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        report.duration_s = time.monotonic() - started
    return report


def _run(
    options: EnrollOptions,
    client: FacesClient,
    report: EnrollmentReport,
    subjects: list[SubjectFiles],
    stream: TextIO,
) -> None:
    try:
        created = _ensure_collection(client, options.collection)
    except ApiError as exc:
        report.fatal_error = f"collection {options.collection!r}: {exc.code}: {exc.detail}"
        return
    except FacesError as exc:
        report.fatal_error = str(exc)
        return
    total = sum(len(s.files) for s in subjects)
    progress = make_progress(options.progress, total, stream, options.progress_interval_s)
    run = _Enrollment(options, client, report, progress)
    executor = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="enroll")
    try:
        futures = [executor.submit(run.enroll_file, s.subject_id, f) for s in subjects for f in s.files]
        wait(futures)
    except KeyboardInterrupt:
        executor.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        executor.shutdown(wait=True)
        progress.close()
    run.remove_empty_subjects()
    if created and not report.enrolled:
        _remove_collection_if_empty(client, report)


def build_parser(prog: str = "faces enroll") -> argparse.ArgumentParser:
    # The only place that reads the environment: it is the command's own configuration.
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Enroll ROOT/<subject_id>/<image> trees through the REST API (resumable). "
        "The server must be running (start it with `faces serve`).",
    )
    parser.add_argument("root", type=Path, help="folder with one sub-folder of images per subject")
    parser.add_argument("--collection", required=True, help="collection to enroll into (created if missing)")
    parser.add_argument(
        "--base-url",
        default=os.environ.get("FACES_BASE_URL", "http://127.0.0.1:8000"),
        help="API address (env FACES_BASE_URL; default %(default)s)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("FACES_API_KEY"), help="sent as X-API-Key (env FACES_API_KEY)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="uploads in flight (default %(default)s)")
    parser.add_argument(
        "--face-selection",
        choices=("strict", "largest"),
        default="strict",
        help="strict rejects images with several faces; largest keeps the biggest",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=Path("enroll-report.json"),
        help="where the JSON report is written (default %(default)s)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        help="retries per request on 5xx, 429, connection errors and timeouts (default %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per request (default %(default)s)"
    )
    parser.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "none"),
        default="auto",
        help="auto (default): a bar on a terminal, a line every --progress-interval seconds otherwise",
    )
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=10.0,
        help="seconds between progress lines (default %(default)s)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress output (same as --progress none)"
    )
    return parser


def main(argv: list[str], *, transport: httpx.BaseTransport | None = None, prog: str = "faces enroll") -> int:
    """Entry point of ``faces enroll``: 0 when no file failed (rejections are fine), 1 otherwise.

    ``transport`` lets tests talk to an in-process fake server.
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a directory")
    if args.concurrency < 1 or args.retries < 0 or args.timeout <= 0 or args.progress_interval < 0:
        parser.error("--concurrency must be >= 1, --retries >= 0, --timeout > 0 and --progress-interval >= 0")
    options = EnrollOptions(
        root=args.root,
        collection=args.collection,
        base_url=args.base_url,
        api_key=args.api_key or None,
        concurrency=args.concurrency,
        face_selection=args.face_selection,
        retries=args.retries,
        timeout_s=args.timeout,
        progress="none" if args.no_progress else args.progress,
        progress_interval_s=args.progress_interval,
    )
    report = EnrollmentReport(options.collection, options.base_url, str(options.root))
    try:
        enroll(options, transport=transport, report=report)
    except KeyboardInterrupt:
        report.fatal_error = "interrupted; files not listed were not attempted, re-run to resume"
    print(report.summary())
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    print(f"Report written to {args.report}")
    return EXIT_OK if report.ok else EXIT_FAILED


def console_main() -> int:
    """``faces-enroll``: the same command for an installation of the client alone."""
    return main(sys.argv[1:], prog="faces-enroll")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

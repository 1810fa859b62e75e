"""Batch enrollment over the REST API: ``faces enroll ROOT --collection C`` (also ``faces-enroll``).

ROOT holds one folder per subject (the folder name is the subject id) with that subject's images.
Uploads go one image per request so every file gets its own exact outcome, a bounded number at a
time, through ``FacesClient`` (which retries what is safe to repeat). Runs are resumable: each file
is keyed by its sha256, sent as ``source_hash`` and stored by the server, so a re-run skips files
the subject already has; each upload also carries an ``Idempotency-Key`` derived from that hash and
its target, the same on every retry and re-run. This module is the command (folder scan, the run,
its arguments); the report is enroll_report.py, the progress output progress.py, the HTTP client.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import httpx

from faces_client.client import FacesClient, FaceSelection, RetryPolicy
from faces_client.enroll_report import EnrollmentReport, FileOutcome
from faces_client.errors import ApiError, ConflictError, FacesError, NotFoundError
from faces_client.models import EnrollResult
from faces_client.progress import Progress, ProgressMode, make_progress

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
# Client errors that are the file's fault (bad or unusable image), not the run's.
FILE_REJECTION_STATUSES = frozenset({413, 415, 422})
EXIT_OK = 0
EXIT_FAILED = 1


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


def idempotency_key(
    collection: str, subject_id: str, sha256: str, face_selection: str, file_name: str
) -> str:
    """The same for one file's upload to one target on every retry and every re-run.

    The file name is part of it because the server stores it (``source_name``) and so counts it in
    the request a key stands for: the same photo under a new name is a new request, not a reuse.
    """
    target = json.dumps([collection, subject_id, sha256, face_selection, file_name])
    return "faces-enroll-" + hashlib.sha256(target.encode()).hexdigest()[:40]


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
                    options.collection, subject_id, sha256, options.face_selection, path.name
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

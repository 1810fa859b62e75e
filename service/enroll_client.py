"""Batch enrollment over the REST API: ``faces enroll ROOT --collection C``.

ROOT holds one folder per subject (the folder name is the subject id) with that subject's images.
Uploads go one image per request so every file gets its own exact outcome, a bounded number at a
time. Transient failures (5xx, 429, connection errors, timeouts) are retried with exponential
backoff and full jitter; client errors (4xx) never are. Runs are resumable: each file is keyed by
its sha256, sent as ``source_hash`` and stored by the server, so a re-run skips files the subject
already has. The client talks HTTP only (httpx, tqdm, stdlib) so it runs anywhere the API is
reachable, without the model stack.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import email.utils
import hashlib
import json
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx
from tqdm import tqdm

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
# Statuses that mean "try again later": the request may not have been processed at all.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Client errors that are the file's fault (bad or unusable image), not the run's.
FILE_REJECTION_STATUSES = frozenset({413, 415, 422})
# Transport failures worth another try: timeouts, dropped or refused connections.
TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
MAX_BACKOFF_S = 30.0
EXIT_OK = 0
EXIT_FAILED = 1

FaceSelection = Literal["strict", "largest"]


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
    show_progress: bool = True


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
    # Set when the run could not start (collection unreachable, bad key...): nothing was attempted.
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
            rows = [
                {k: v for k, v in dataclasses.asdict(item).items() if v is not None}
                for item in sorted(items, key=lambda o: o.path)
            ]
            return rows

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


class ApiRequestError(Exception):
    """A request that did not succeed after retries, or failed in a way retrying cannot fix."""

    def __init__(self, code: str, detail: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status
        self.attempts = attempts


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


def backoff_delay(attempt: int, base_s: float, retry_after_s: float | None = None) -> float:
    """Full-jitter exponential backoff; a server's Retry-After is honoured as a lower bound."""
    delay = random.uniform(0.0, min(MAX_BACKOFF_S, base_s * (2**attempt)))
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_BACKOFF_S))
    return delay


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return max(0.0, float(value))
    with contextlib.suppress(TypeError, ValueError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return None


def _problem(response: httpx.Response) -> tuple[str, str]:
    """``(code, detail)`` from an RFC 9457 body, falling back to the status line."""
    code = f"http_{response.status_code}"
    detail = response.reason_phrase or "request failed"
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict):
            code = str(body.get("code") or code)
            detail = str(body.get("detail") or body.get("title") or detail)
    return code, detail


class ApiClient:
    """The few API calls enrollment needs, each retried on transient failures."""

    def __init__(self, client: httpx.AsyncClient, *, retries: int, backoff_base_s: float) -> None:
        self._client = client
        self._retries = retries
        self._backoff_base_s = backoff_base_s

    async def request(
        self,
        method: str,
        url: str,
        *,
        ok: Sequence[int],
        before_retry: Callable[[], Awaitable[httpx.Response | None]] | None = None,
        **kwargs: Any,
    ) -> tuple[httpx.Response, int]:
        """Send until the status is in ``ok``; returns the response and the attempts it took.

        ``before_retry`` runs before each retry that follows an ambiguous failure (the request may
        have reached the server); a response from it ends the retries, so a lost reply to an upload
        that did succeed does not enroll the file twice.
        """
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                response = await self._client.request(method, url, **kwargs)
            except TRANSIENT_ERRORS as exc:
                failure = ApiRequestError(type(exc).__name__, str(exc) or repr(exc), attempts=attempt)
                # Only a refused or timed-out connection proves the request never reached the server.
                ambiguous = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
            except httpx.TransportError as exc:
                # A bad URL, proxy or protocol: retrying cannot help.
                raise ApiRequestError(type(exc).__name__, str(exc) or repr(exc), attempts=attempt) from exc
            else:
                if response.status_code in ok:
                    return response, attempt
                code, detail = _problem(response)
                failure = ApiRequestError(code, detail, status=response.status_code, attempts=attempt)
                if response.status_code not in RETRYABLE_STATUSES:
                    raise failure
                retry_after = _retry_after_seconds(response)
                ambiguous = response.status_code in (500, 502, 504)
            if attempt > self._retries:
                raise failure
            await asyncio.sleep(backoff_delay(attempt - 1, self._backoff_base_s, retry_after))
            if ambiguous and before_retry is not None:
                with contextlib.suppress(ApiRequestError):
                    settled = await before_retry()
                    if settled is not None:
                        return settled, attempt

    async def ensure_collection(self, collection: str) -> None:
        path = f"/v1/collections/{quote(collection, safe='')}"
        try:
            await self.request("GET", path, ok=(200,))
        except ApiRequestError as exc:
            if exc.status != 404:
                raise
            await self.request("POST", "/v1/collections", ok=(200, 201, 409), json={"name": collection})

    async def enrolled_hashes(self, collection: str, subject_id: str) -> dict[str, str] | None:
        """``source_hash`` → ``face_id`` for the subject's faces; None when the subject does not exist."""
        path = f"/v1/collections/{quote(collection, safe='')}/subjects/{quote(subject_id, safe='')}/faces"
        try:
            response, _ = await self.request("GET", path, ok=(200,))
        except ApiRequestError as exc:
            if exc.status == 404 and exc.code != "collection_not_found":
                return None
            raise
        body = response.json()
        faces = body if isinstance(body, list) else body.get("faces", body.get("items", []))
        return {
            str(f["source_hash"]): str(f.get("face_id"))
            for f in faces
            if isinstance(f, dict) and f.get("source_hash")
        }

    async def create_subject(self, collection: str, subject_id: str) -> bool:
        """True when this call created the subject (False: it already existed)."""
        response, _ = await self.request(
            "POST",
            f"/v1/collections/{quote(collection, safe='')}/subjects",
            ok=(200, 201, 409),
            json={"subject_id": subject_id},
        )
        return response.status_code != 409

    async def delete_subject(self, collection: str, subject_id: str) -> None:
        await self.request(
            "DELETE",
            f"/v1/collections/{quote(collection, safe='')}/subjects/{quote(subject_id, safe='')}",
            ok=(200, 204, 404),
        )

    async def upload_face(
        self,
        collection: str,
        subject_id: str,
        filename: str,
        data: bytes,
        sha256: str,
        face_selection: FaceSelection,
    ) -> tuple[dict[str, Any], int]:
        """The server's per-file result for one image, and how many attempts it took."""
        path = f"/v1/collections/{quote(collection, safe='')}/subjects/{quote(subject_id, safe='')}/faces"
        params = {"create_subject": "true", "face_selection": face_selection}

        async def already_enrolled() -> httpx.Response | None:
            hashes = await self.enrolled_hashes(collection, subject_id)
            if hashes is not None and sha256 in hashes:
                # The lost attempt did enroll it: report that face, do not upload again.
                result = {"filename": filename, "status": "enrolled", "face_id": hashes[sha256]}
                return httpx.Response(200, json={"results": [result]})
            return None

        response, attempts = await self.request(
            "POST",
            path,
            ok=(200, 201, 207),
            before_retry=already_enrolled,
            params=params,
            data={"source_hash": sha256},
            files=[("images", (filename, data, _content_type(filename)))],
        )
        results = response.json().get("results") or []
        if len(results) != 1 or not isinstance(results[0], dict):
            raise ApiRequestError(
                "unexpected_response",
                f"expected one result, got {len(results)}",
                status=response.status_code,
                attempts=attempts,
            )
        return results[0], attempts


def _content_type(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return {".png": "image/png", ".webp": "image/webp"}.get(suffix, "image/jpeg")


class _Enrollment:
    """One run: shared state between the per-file tasks (subject preparation, report, progress)."""

    def __init__(
        self, options: EnrollOptions, api: ApiClient, report: EnrollmentReport, progress: tqdm
    ) -> None:
        self._options = options
        self._api = api
        self._report = report
        self._progress = progress
        self._subjects: dict[str, asyncio.Task[dict[str, str]]] = {}
        self._claimed: dict[str, set[str]] = {}
        self._created: set[str] = set()
        self._semaphore = asyncio.Semaphore(options.concurrency)

    def _subject_ready(self, subject_id: str) -> asyncio.Task[dict[str, str]]:
        """Created once per subject, shared by its files: the hashes it already has."""
        task = self._subjects.get(subject_id)
        if task is None:
            task = asyncio.create_task(self._prepare_subject(subject_id))
            self._subjects[subject_id] = task
        return task

    async def _prepare_subject(self, subject_id: str) -> dict[str, str]:
        hashes = await self._api.enrolled_hashes(self._options.collection, subject_id)
        if hashes is None:
            # Created up front so concurrent uploads never race to create the same subject
            # (and removed at the end if none of its files could be enrolled).
            if await self._api.create_subject(self._options.collection, subject_id):
                self._created.add(subject_id)
            hashes = {}
        return hashes

    async def remove_empty_subjects(self) -> None:
        """Delete the subjects this run created that ended with no face (every file rejected or failed):
        the API alone never leaves an empty subject behind, and neither does a batch run."""
        kept = {o.subject_id for o in self._report.enrolled}
        for subject_id in sorted(self._created - kept):
            with contextlib.suppress(ApiRequestError):
                hashes = await self._api.enrolled_hashes(self._options.collection, subject_id)
                if hashes == {}:  # still empty: nobody else enrolled into it meanwhile
                    await self._api.delete_subject(self._options.collection, subject_id)
                    self._report.removed_subjects.append(subject_id)

    def _record(self, bucket: list[FileOutcome], outcome: FileOutcome) -> None:
        bucket.append(outcome)
        self._progress.update(1)
        self._progress.set_postfix(self._report.counts(), refresh=False)

    async def enroll_file(self, subject_id: str, path: Path) -> None:
        async with self._semaphore:
            try:
                await self._enroll_file(subject_id, path)
            except Exception as exc:
                # A batch never dies on one file: whatever went wrong (an unparsable reply...) is reported.
                self._record(
                    self._report.failed,
                    FileOutcome(
                        str(path), subject_id, None, code=type(exc).__name__, detail=str(exc) or repr(exc)
                    ),
                )

    async def _enroll_file(self, subject_id: str, path: Path) -> None:
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            self._record(
                self._report.failed,
                FileOutcome(str(path), subject_id, None, code="unreadable_file", detail=str(exc)),
            )
            return
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            existing = await self._subject_ready(subject_id)
        except ApiRequestError as exc:
            self._record(
                self._report.failed,
                FileOutcome(
                    str(path),
                    subject_id,
                    sha256,
                    code=exc.code,
                    detail=f"subject could not be prepared: {exc.detail}",
                    attempts=exc.attempts,
                ),
            )
            return
        claimed = self._claimed.setdefault(subject_id, set())
        if sha256 in existing or sha256 in claimed:
            reason = "already_enrolled" if sha256 in existing else "duplicate_in_run"
            self._record(self._report.skipped, FileOutcome(str(path), subject_id, sha256, code=reason))
            return
        claimed.add(sha256)
        try:
            result, attempts = await self._api.upload_face(
                self._options.collection, subject_id, path.name, data, sha256, self._options.face_selection
            )
        except ApiRequestError as exc:
            outcome = FileOutcome(
                str(path), subject_id, sha256, code=exc.code, detail=exc.detail, attempts=exc.attempts
            )
            # The server judged the file itself (undecodable, no usable face...): a rejection.
            rejected = exc.status in FILE_REJECTION_STATUSES
            self._record(self._report.rejected if rejected else self._report.failed, outcome)
            return
        self._record_result(path, subject_id, sha256, result, attempts)

    def _record_result(
        self, path: Path, subject_id: str, sha256: str, result: Mapping[str, Any], attempts: int
    ) -> None:
        status = result.get("status")
        if status == "enrolled":
            self._record(
                self._report.enrolled,
                FileOutcome(
                    str(path), subject_id, sha256, face_id=str(result.get("face_id")), attempts=attempts
                ),
            )
        elif status == "rejected":
            error = result.get("error") or {}
            self._record(
                self._report.rejected,
                FileOutcome(
                    str(path),
                    subject_id,
                    sha256,
                    code=str(error.get("code") or "rejected"),
                    detail=str(error.get("detail") or ""),
                    attempts=attempts,
                ),
            )
        else:
            self._record(
                self._report.failed,
                FileOutcome(
                    str(path),
                    subject_id,
                    sha256,
                    code="unexpected_response",
                    detail=f"unknown result status {status!r}",
                    attempts=attempts,
                ),
            )


async def enroll(
    options: EnrollOptions,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    report: EnrollmentReport | None = None,
) -> EnrollmentReport:
    """Run one enrollment; never raises for per-file or server problems, they land in the report.

    Pass ``report`` to keep what was done so far when the run is interrupted.
    """
    if report is None:
        report = EnrollmentReport(options.collection, options.base_url, str(options.root))
    started = time.monotonic()
    report.started_at = datetime.now(UTC).isoformat(timespec="seconds")
    subjects, report.ignored = scan_tree(options.root)
    headers = {"X-API-Key": options.api_key} if options.api_key else {}
    limits = httpx.Limits(max_connections=options.concurrency, max_keepalive_connections=options.concurrency)
    async with httpx.AsyncClient(
        base_url=options.base_url,
        headers=headers,
        timeout=httpx.Timeout(options.timeout_s, connect=min(10.0, options.timeout_s)),
        limits=limits,
        transport=transport,
    ) as client:
        api = ApiClient(client, retries=options.retries, backoff_base_s=options.backoff_base_s)
        try:
            await api.ensure_collection(options.collection)
        except ApiRequestError as exc:
            report.fatal_error = f"collection {options.collection!r}: {exc.code}: {exc.detail}"
        else:
            total = sum(len(s.files) for s in subjects)
            with tqdm(
                total=total, unit="img", desc="enroll", disable=not options.show_progress, file=sys.stderr
            ) as progress:
                run = _Enrollment(options, api, report, progress)
                await asyncio.gather(*(run.enroll_file(s.subject_id, f) for s in subjects for f in s.files))
                await run.remove_empty_subjects()
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    report.duration_s = time.monotonic() - started
    return report


def build_parser() -> argparse.ArgumentParser:
    # The only place outside Settings that reads the environment: it is the client's own config.
    parser = argparse.ArgumentParser(
        prog="faces enroll",
        description="Enroll ROOT/<subject_id>/<image> trees through the REST API (resumable).",
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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str], *, transport: httpx.AsyncBaseTransport | None = None) -> int:
    """Entry point of ``faces enroll``: 0 when no file failed (rejections are fine), 1 otherwise.

    ``transport`` lets tests talk to an in-process fake server.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a directory")
    if args.concurrency < 1 or args.retries < 0 or args.timeout <= 0:
        parser.error("--concurrency must be >= 1, --retries >= 0 and --timeout > 0")
    options = EnrollOptions(
        root=args.root,
        collection=args.collection,
        base_url=args.base_url,
        api_key=args.api_key or None,
        concurrency=args.concurrency,
        face_selection=args.face_selection,
        retries=args.retries,
        timeout_s=args.timeout,
        show_progress=not args.no_progress,
    )
    report = EnrollmentReport(options.collection, options.base_url, str(options.root))
    try:
        asyncio.run(enroll(options, transport=transport, report=report))
    except KeyboardInterrupt:
        report.fatal_error = "interrupted; files not listed were not attempted, re-run to resume"
    print(report.summary())
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    print(f"Report written to {args.report}")
    return EXIT_OK if report.ok else EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

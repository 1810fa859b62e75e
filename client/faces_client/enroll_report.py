"""The outcome of a ``faces enroll`` run: one record per file, grouped as an operator reads them."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


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

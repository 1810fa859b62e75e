"""Locust users for ``bench.bench_http`` (closed loop: each user sends its next request as soon as
the previous one returns, so ``--users`` is the concurrency).

Configured by the harness through environment variables (locust owns the command line):
``BENCH_COLLECTION`` and ``BENCH_IMAGES`` (a file listing one JPEG path per line).

    locust -f bench/locustfile.py --headless -u 8 -r 8 -t 20s --host http://127.0.0.1:8000 IdentifyUser
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from pathlib import Path

from locust import HttpUser, constant, task


def _load_images() -> tuple[tuple[str, bytes], ...]:
    listing = os.environ.get("BENCH_IMAGES")
    if not listing:
        return ()
    paths = [Path(line) for line in Path(listing).read_text().splitlines() if line.strip()]
    return tuple((p.name, p.read_bytes()) for p in paths)


IMAGES = _load_images()
COLLECTION = os.environ.get("BENCH_COLLECTION", "bench")


class IdentifyUser(HttpUser):
    """POST /identify with a random probe photo."""

    wait_time = constant(0)

    @task
    def identify(self) -> None:
        name, data = random.choice(IMAGES)
        self.client.post(
            f"/v1/collections/{COLLECTION}/identify",
            files={"image": (name, data, "image/jpeg")},
            name="identify",
        )


class EnrollUser(HttpUser):
    """POST one photo as the first face of a brand-new subject."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self._prefix = uuid.uuid4().hex[:12]
        self._counter = itertools.count()
        self._offset = random.randrange(max(len(IMAGES), 1))

    @task
    def enroll(self) -> None:
        n = next(self._counter)
        name, data = IMAGES[(self._offset + n) % len(IMAGES)]
        self.client.post(
            f"/v1/collections/{COLLECTION}/subjects/load-{self._prefix}-{n}/faces",
            params={"create_subject": "true", "face_selection": "largest"},
            files=[("images", (name, data, "image/jpeg"))],
            name="enroll",
        )

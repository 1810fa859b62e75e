"""The faults of issue 18 replayed against a real server: ``python -m bench.bench_hostile --faults``.

Per checkout, each against a fresh ``faces serve`` (SQLite):

- ``wrong_json_types``: ``identify_threshold`` sent as ``true``, ``false``, ``"0.5"`` on create and
  on PATCH; how many were accepted (target 0);
- ``orphans_after_sigkill``: one 17.6 Mpx PNG through identify (the large-image lane's worker process
  and multiprocessing's resource tracker start), SIGKILL of the server, then how many of its child
  processes are still alive 5 s later (target 0; survivors are killed afterwards);
- ``full_disk``: the store on a 2 MB tmpfs (1.2 MB taken by a filler file), enrollment until it is
  refused, then identify, a subject DELETE, and the same DELETE and an enrollment once the filler is
  removed (needs root for the mount; reported as skipped otherwise).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench.common import Table
from service.testing.server import ServerProcess, descendants, start_time

TMPFS_SIZE = "2m"
FILLER_BYTES = 1_200_000
ORPHAN_WAIT_S = 5.0


@dataclass(slots=True)
class FaultRun:
    label: str
    root: str
    wrong_types: dict[str, int] = field(default_factory=dict)  # "create true" → status
    children_before_kill: int = 0
    orphans_after_5s: int = 0
    full_disk: dict[str, str] = field(default_factory=dict)  # step → status[:code]


def _status(response: httpx.Response) -> str:
    if response.status_code >= 400:
        with contextlib.suppress(ValueError, AttributeError):
            return f"{response.status_code}:{response.json().get('code', '?')}"
    return str(response.status_code)


def _giant_png(face: Path, side: int = 4200) -> bytes:
    canvas = Image.new("RGB", (side, side), (128, 128, 128))
    with Image.open(face) as img:
        canvas.paste(img.convert("RGB"), (side // 2, side // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _photos(lfw_root: Path, count: int) -> list[tuple[str, bytes]]:
    people = sorted(p for p in (lfw_root / "images").iterdir() if p.is_dir())[:count]
    return [(person.name, sorted(person.glob("*.jpg"))[0].read_bytes()) for person in people]


def wrong_types(url: str) -> dict[str, int]:
    out: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        client.post("/v1/collections", json={"name": "typed"}).raise_for_status()
        for i, value in enumerate((True, False, "0.5")):
            label = {True: "true", False: "false"}.get(value, '"0.5"')  # type: ignore[call-overload]
            created = client.post("/v1/collections", json={"name": f"wrong{i}", "identify_threshold": value})
            out[f"create {label}"] = created.status_code
            patched = client.patch("/v1/collections/typed", json={"identify_threshold": value})
            out[f"patch {label}"] = patched.status_code
    return out


def orphans(run: FaultRun, root: Path | None, giant: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        server = ServerProcess(Path(tmp), repo_root=root, env={"FACES_LOG_LEVEL": "ERROR"})
        server.start()
        try:
            with httpx.Client(base_url=server.url, timeout=300) as client:
                client.post("/v1/collections", json={"name": "orphans"}).raise_for_status()
                client.post(
                    "/v1/collections/orphans/identify", files={"image": ("g.png", giant, "image/png")}
                )
            children = descendants(server.pid)
            run.children_before_kill = len(children)
            server.kill()
            time.sleep(ORPHAN_WAIT_S)
            alive = [pid for pid, started in children.items() if start_time(pid) == started]
            run.orphans_after_5s = len(alive)
            for pid in alive:  # ours: started by the server this run started
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            server.stop()


def full_disk(run: FaultRun, root: Path | None, photos: list[tuple[str, bytes]]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        volume = Path(tmp) / "volume"
        volume.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(volume)], capture_output=True
        )
        if mounted.returncode != 0:
            run.full_disk = {"skipped": "cannot mount a tmpfs (needs root)"}
            return
        try:
            filler = volume / "filler"
            filler.write_bytes(b"\0" * FILLER_BYTES)
            env = {"FACES_DATABASE_URL": f"sqlite:///{volume}/faces.db", "FACES_LOG_LEVEL": "CRITICAL"}
            server = ServerProcess(Path(tmp) / "data", repo_root=root, env=env)
            server.start()
            try:
                _fill_and_recover(run, server.url, photos, filler)
            finally:
                server.stop()
        finally:
            subprocess.run(["umount", "-l", str(volume)], check=False)


def _fill_and_recover(run: FaultRun, url: str, photos: list[tuple[str, bytes]], filler: Path) -> None:
    steps = run.full_disk
    with httpx.Client(base_url=url, timeout=60) as client:
        client.post("/v1/collections", json={"name": "full"}).raise_for_status()

        def enroll(person: str, data: bytes) -> httpx.Response:
            return client.post(
                f"/v1/collections/full/subjects/{person}/faces",
                params={"create_subject": "true", "face_selection": "largest"},
                files={"images": ("p.jpg", data, "image/jpeg")},
            )

        enrolled: list[str] = []
        refusal = None
        for person, data in photos:
            response = enroll(person, data)
            if response.status_code != 201:
                refusal = _status(response)
                break
            enrolled.append(person)
        steps["enrolled before full"] = str(len(enrolled))
        steps["enroll on full disk"] = refusal or "never full"
        if refusal is None or not enrolled:
            return
        faces: Any = client.get("/v1/collections/full").json().get("face_count")
        steps["faces stored (= acked?)"] = f"{faces} ({'yes' if faces == len(enrolled) else 'no'})"
        probe = client.post(
            "/v1/collections/full/identify", files={"image": ("p.jpg", photos[0][1], "image/jpeg")}
        )
        steps["identify on full disk"] = _status(probe)
        steps["DELETE subject on full disk"] = _status(
            client.delete(f"/v1/collections/full/subjects/{enrolled[0]}")
        )
        filler.unlink()
        steps["DELETE subject, space back"] = _status(
            client.delete(f"/v1/collections/full/subjects/{enrolled[0]}")
        )
        person, data = photos[len(enrolled)]
        steps["enroll, space back"] = _status(enroll(person, data))


def run_faults(label: str, root: Path | None, lfw_root: Path) -> FaultRun:
    run = FaultRun(label=label, root=str(root or "."))
    photos = _photos(lfw_root, 80)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        server = ServerProcess(Path(tmp), repo_root=root, env={"FACES_LOG_LEVEL": "ERROR"})
        server.start()
        try:
            print(f"[{label}] wrong JSON types", flush=True)
            run.wrong_types = wrong_types(server.url)
        finally:
            server.stop()
    print(f"[{label}] SIGKILL after the large-image lane ran", flush=True)
    face = lfw_root / "images" / "Colin_Powell" / "Colin_Powell_0001.jpg"
    orphans(run, root, _giant_png(face))
    print(f"[{label}] full disk (2 MB tmpfs)", flush=True)
    full_disk(run, root, photos)
    return run


def faults_table(runs: list[FaultRun]) -> Table:
    rows: list[list[str]] = []
    rows.append(
        [
            'wrong JSON types accepted (of 6: threshold true/false/"0.5", create + PATCH; target 0)',
            *[str(sum(1 for s in r.wrong_types.values() if s < 300)) for r in runs],
        ]
    )
    for key in runs[0].wrong_types:
        rows.append([f"  {key}", *[str(r.wrong_types.get(key, "-")) for r in runs]])
    rows.append(["child processes before SIGKILL", *[str(r.children_before_kill) for r in runs]])
    rows.append(["children alive 5 s after SIGKILL (target 0)", *[str(r.orphans_after_5s) for r in runs]])
    keys = list(dict.fromkeys(k for r in runs for k in r.full_disk))
    for key in keys:
        rows.append([f"full disk: {key}", *[r.full_disk.get(key, "-") for r in runs]])
    return Table(title="Faults (issue 18)", columns=["", *[r.label for r in runs]], rows=rows)


README_START = "<!-- bench:hostile-faults (python -m bench.bench_hostile --faults rewrites this block) -->"
README_END = "<!-- /bench:hostile-faults -->"


def update_readme(path: Path, command: str, table: Table) -> bool:
    """Replace the faults block of README.md; False (file untouched) when its markers are missing."""
    text = path.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        return False
    block = f"{README_START}\n`{command}`\n\n{table.to_markdown()}\n{README_END}"
    path.write_text(text[:start] + block + text[end + len(README_END) :], encoding="utf-8")
    return True

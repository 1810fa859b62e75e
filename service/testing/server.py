"""A real ``faces serve`` process on 127.0.0.1 with its own data directory, for tests and benchmarks.

The server is configured only through FACES_* variables, exactly as an operator would (none of the
caller's own FACES_* leak in), waits for ``/readyz`` before it is used, and is stopped with SIGINT
so its lifespan shutdown (index snapshots) runs as in production; ``kill()`` is the crash instead.
The port is fixed at construction, so a restart comes back at the same address.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port nothing listens on right now (the kernel's pick), on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerNotReady(RuntimeError):
    """The server exited during start-up, or did not answer ``/readyz`` 200 in time."""


class ServerProcess:
    """``python -m service.cli serve`` (or ``python -m ENTRY... serve``) on a free port.

    ``env``: FACES_* settings on top of the data directory's store and index; ``entry``: the module
    (and its arguments) run before ``serve``; ``repo_root``: another checkout to run the server from
    (its working directory and PYTHONPATH), e.g. a before/after comparison.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        entry: Sequence[str] = ("service.cli",),
        repo_root: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"server-{self.port}.log"
        self.startup_s = float("nan")
        self._extra_env = dict(env or {})
        self._entry = tuple(entry)
        self._repo_root = repo_root
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the server was never started")
        return self._process.pid

    @property
    def database_url(self) -> str:
        return self._extra_env.get("FACES_DATABASE_URL", f"sqlite:///{self.data_dir / 'faces.db'}")

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACES_")}
        env.update(
            {
                "FACES_DATABASE_URL": self.database_url,
                "FACES_INDEX_DIR": str(self.data_dir / "index"),
                "FACES_HOST": "127.0.0.1",
                "FACES_PORT": str(self.port),
                "FACES_LOG_LEVEL": "WARNING",
            }
        )
        if self._repo_root is not None:
            env["PYTHONPATH"] = str(self._repo_root)
        env.update(self._extra_env)
        return env

    def start(self, timeout_s: float = 120.0) -> None:
        """Start and return once ``/readyz`` answers 200; ``ServerNotReady`` (with the log) otherwise."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        address = ["--host", "127.0.0.1", "--port", str(self.port)]
        command = [sys.executable, "-m", *self._entry, "serve", *address]
        started = time.perf_counter()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                cwd=self._repo_root or REPO_ROOT,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        with httpx.Client(timeout=5.0) as client:
            while time.perf_counter() < started + timeout_s:
                if self._process.poll() is not None:
                    raise ServerNotReady(f"server exited with {self._process.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        self.startup_s = time.perf_counter() - started
                        return
                time.sleep(0.2)
        self.stop()
        raise ServerNotReady(f"server not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 60.0) -> None:
        """SIGINT (a clean shutdown), then SIGKILL if it has not exited within ``timeout_s``."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown code runs."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGKILL)
        self._process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def running_server(
    data_dir: Path,
    *,
    env: Mapping[str, str] | None = None,
    entry: Sequence[str] = ("service.cli",),
    repo_root: Path | None = None,
    timeout_s: float = 120.0,
) -> Iterator[ServerProcess]:
    """A started server, stopped on the way out (also when the start fails)."""
    server = ServerProcess(data_dir, env=env, entry=entry, repo_root=repo_root)
    try:
        server.start(timeout_s)
        yield server
    finally:
        server.stop()


def descendants(pid: int) -> dict[int, str]:
    """pid → start time (field 22 of /proc/pid/stat) of every live descendant of ``pid`` (Linux):
    what a crash test records before the kill, to ask afterwards whether any of them survived."""
    found: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for child in map(int, (task / "children").read_text().split()):
                    started = start_time(child)
                    if started is not None:
                        found[child] = started
                        found.update(descendants(child))
    return found


def start_time(pid: int) -> str | None:
    """The process's start time, or None once it is gone or a zombie (dead, not yet reaped); a pid
    reused by a new process has another start time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else fields[19]

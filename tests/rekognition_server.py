"""A real ``faces serve`` (uvicorn) process for the Rekognition-compatible API tests, and clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config

from tests.conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FacesServer:
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / f"server-{self.port}.log"

    def start(self) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "FACES_DATABASE_URL": f"sqlite:///{self.data_dir}/faces.db",
            "FACES_INDEX_DIR": str(self.data_dir / "index"),
            "FACES_LOG_LEVEL": "WARNING",
            "FACES_BATCH_MAX_WAIT_MS": "0",
            **self.env,
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("server did not become ready:\n" + self.log.read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def rekognition(url: str, key_id: str = "anything", secret: str = "anything", **config: Any) -> Any:
    """boto3's client exactly as AWS's examples build it, with only endpoint and credentials changed."""
    return boto3.client(
        "rekognition",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, **config),
    )

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m app`` as a subprocess on a free loopback port."""

    def __init__(self, model_root: Path, **env):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "CIFAR10_WARMUP_RUNS": "1",
            "CIFAR10_LOG_LEVEL": "info",
            **{f"CIFAR10_{k.upper()}": str(v) for k, v in env.items()},
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--model-dir",
                str(model_root),
            ],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(f"{self.base}/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("server never became ready")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture(scope="module")
def server(tiny_model_root):
    s = Server(tiny_model_root)
    s.wait_ready()
    yield s
    s.stop()

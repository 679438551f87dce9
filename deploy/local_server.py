"""Helpers for scripts that run the real server on this machine (standard library only).

Used by ``benchmarks/serving.py`` and the end-to-end tests.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart_body(
    field: str, filename: str, data: bytes, content_type: str = "image/png"
) -> tuple[bytes, str]:
    """One file as ``multipart/form-data``: ``(body, Content-Type header value)``."""
    boundary = "localserverboundary"
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class ServerNotReady(RuntimeError):
    """The server exited, or did not become ready in time."""


def wait_until_ready(
    server: subprocess.Popen, ready, timeout: float = 180, interval: float = 0.5
) -> None:
    """Poll ``ready()`` until it returns True; fail if the server exits or time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if server.poll() is not None:
            raise ServerNotReady(
                f"server exited with status {server.returncode} before it was ready"
            )
        if time.monotonic() > deadline:
            raise ServerNotReady(f"server not ready after {timeout:.0f} s")
        time.sleep(interval)


def http_ready(url: str):
    """A ``ready()`` for ``wait_until_ready``: ``url`` answers 200."""

    def ready() -> bool:
        try:
            return urllib.request.urlopen(url, timeout=2).status == 200
        except OSError:
            return False

    return ready

"""Memory bounded by design: 16 concurrent maximum-size requests on every route of the real
server (the shipped model, default settings) keep its peak RSS under 1 GiB, and every answer is
a documented status (200, 400, 413, 503 with ``Retry-After``), never a dropped connection.

The requests are the largest each route accepts under the default limits: a multipart upload of
``max_files`` noise PNGs filling the request cap, a raw PNG of ``max_upload_bytes``, a raw PNG
of nearly ``max_image_pixels`` pixels (a small file that decodes large), the Open Inference
Protocol with base64 images, with binary tensors and with a request-cap's worth of JSON numbers,
and TensorFlow Serving's REST API with base64 images and with JSON numbers. The peak is the
server process's VmHWM, read after all of them.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import struct
import zlib
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app.config import Settings
from tests.helpers import ROOT, Server, documented_error

CONCURRENT = 16
PEAK_LIMIT_MIB = 1024
MODEL_DIR = ROOT / "models" / "cifar10-resnet50"


def noise_png(nbytes: int, seed: int = 0) -> bytes:
    """A PNG of random RGB pixels of about ``nbytes`` (noise does not compress)."""
    side = int((nbytes / 3) ** 0.5)
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    data = buf.getvalue()
    assert len(data) <= nbytes, (len(data), nbytes)
    return data


# PNG colour types and bytes per pixel of the flat images: RGB, 16-bit gray (the most memory
# per pixel to bring to 8 bits), RGBA (composited on white)
FLAT = {
    "rgb": (2, 8, b"\x80\x40\x20"),
    "gray16": (0, 16, b"\x80\x40"),
    "rgba": (6, 8, b"\x80\x40\x20\x80"),
}


def flat_png(pixels: int, kind: str = "rgb") -> bytes:
    """A PNG of one colour with nearly ``pixels`` pixels: a few hundred KB that decode large."""
    colour_type, depth, pixel = FLAT[kind]
    side = int(pixels**0.5)
    idat = zlib.compress((b"\x00" + pixel * side) * side, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def requests_at_the_limits(settings: Settings, name: str) -> dict[str, dict]:
    """The largest request each route accepts, as ``httpx`` keyword arguments."""
    cap, files = settings.max_request_bytes, settings.max_files
    per_file = min(settings.max_upload_bytes, (cap - 64 * 1024) // files - 1024)
    png = noise_png(per_file)
    per_b64 = min(settings.max_upload_bytes, ((cap - 64 * 1024) // files - 64) * 3 // 4)
    b64 = base64.b64encode(noise_png(per_b64, seed=1)).decode()
    boundary = "memory-bounds"
    multipart = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{i}.png"\r\n'
            "Content-Type: image/png\r\n\r\n".encode()
            + png
            + b"\r\n"
            for i in range(files)
        )
        + f"--{boundary}--\r\n".encode()
    )
    # one part header more than clients send: python-multipart's general path reads it
    general = multipart.replace(
        b"Content-Type: image/png\r\n", b"Content-Type: image/png\r\nX-Part: 1\r\n"
    )
    general = general[: len(multipart) - 64 * 1024] + general[-len(f"--{boundary}--\r\n") :]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [files],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": files * (4 + len(png))},
                }
            ]
        }
    ).encode()
    binary = header + b"".join(struct.pack("<I", len(png)) + png for _ in range(files))
    zeros = (cap - 1024) // 2  # "0," per number: the most values a capped body can hold
    numbers = b"[" + b"0," * (zeros - 1) + b"0]"
    v2 = f"/v2/models/{name}/infer"
    v1 = f"/v1/models/{name}:predict"
    json_type = {"content-type": "application/json"}
    return {
        "multipart": {
            "url": "/predict",
            "content": multipart,
            "headers": {"content-type": f"multipart/form-data; boundary={boundary}"},
        },
        "raw file": {
            "url": "/predict",
            "content": noise_png(settings.max_upload_bytes, seed=2),
            "headers": {"content-type": "image/png"},
        },
        "raw pixels": {
            "url": "/predict",
            "content": flat_png(settings.max_image_pixels),
            "headers": {"content-type": "image/png"},
        },
        "raw RGBA pixels": {
            "url": "/predict",
            "content": flat_png(settings.max_image_pixels, "rgba"),
            "headers": {"content-type": "image/png"},
        },
        "multipart, general path": {
            "url": "/predict",
            "content": general,
            "headers": {"content-type": f"multipart/form-data; boundary={boundary}"},
        },
        "raw 16-bit pixels": {
            "url": "/predict",
            "content": flat_png(settings.max_image_pixels, "gray16"),
            "headers": {"content-type": "image/png"},
        },
        "v2 base64": {
            "url": v2,
            "headers": json_type,
            "content": json.dumps(
                {
                    "inputs": [
                        {
                            "name": "image",
                            "shape": [files],
                            "datatype": "BYTES",
                            "data": [b64] * files,
                        }
                    ]
                }
            ).encode(),
        },
        "v2 binary": {
            "url": v2,
            "content": binary,
            "headers": {
                "content-type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(header)),
            },
        },
        "v2 numbers": {
            "url": v2,
            "headers": json_type,
            "content": (
                b'{"inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8", '
                b'"data": ' + numbers + b"}]}"
            ),
        },
        "v1 base64": {
            "url": v1,
            "headers": json_type,
            "content": json.dumps({"instances": [{"b64": b64}] * files}).encode(),
        },
        "v1 numbers": {
            "url": v1,
            "headers": json_type,
            "content": b'{"instances": [' + numbers + b"]}",
        },
    }


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def _hammer(base: str, request: dict) -> tuple[Counter, list[str], int]:
    statuses: Counter = Counter()
    failures: list[str] = []
    missing_retry_after = 0
    limits = httpx.Limits(max_connections=CONCURRENT)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=300) as client:

        async def one() -> None:
            nonlocal missing_retry_after
            try:
                r = await client.post(**request)
            except httpx.TransportError as exc:  # reset, closed, timed out: a lost request
                failures.append(repr(exc))
                return
            statuses[r.status_code] += 1
            if r.status_code == 503 and "retry-after" not in r.headers:
                missing_retry_after += 1

        await asyncio.gather(*(one() for _ in range(CONCURRENT)))
    return statuses, failures, missing_retry_after


@pytest.fixture(scope="module")
def shipped_server():
    if not (MODEL_DIR / "4" / "saved_model.pb").is_file():
        pytest.skip("the shipped model is not in models/")
    server = Server(MODEL_DIR)
    server.wait_ready(timeout=300)
    yield server
    server.stop()


def test_concurrent_maximum_size_requests_on_every_route_keep_memory_bounded(shipped_server):
    server = shipped_server
    settings = Settings()  # the defaults the server runs with
    name = httpx.get(f"{server.base}/model", timeout=30).json()["name"]
    requests = requests_at_the_limits(settings, name)
    before = vm_hwm_mib(server.proc.pid)

    async def flood() -> list:  # every route at once, 16 concurrent requests each
        return await asyncio.gather(*(_hammer(server.base, r) for r in requests.values()))

    # each route alone (each gets the whole budget), then all at once
    one_by_one = {route: asyncio.run(_hammer(server.base, r)) for route, r in requests.items()}
    at_once = dict(zip(requests, asyncio.run(flood()), strict=True))
    peak = vm_hwm_mib(server.proc.pid)
    report = {
        f"{route} ({how})": dict(statuses)
        for how, results in (("alone", one_by_one), ("at once", at_once))
        for route, (statuses, _, _) in results.items()
    }
    print(f"peak RSS {before:.0f} -> {peak:.0f} MiB; answers {report}")
    for route, (statuses, failures, missing_retry_after) in [
        *one_by_one.items(),
        *at_once.items(),
    ]:
        assert not failures, (route, failures[:3])
        assert set(statuses) <= {200, 413, 503}, (route, statuses)
        assert missing_retry_after == 0, route
    assert peak < PEAK_LIMIT_MIB, f"peak RSS {peak:.0f} MiB; answers {report}"
    # and each of those requests alone is answered as documented: served, or (a body of
    # numbers only) refused as too large
    for route, request in requests.items():
        alone = httpx.post(
            f"{server.base}{request['url']}",
            timeout=300,
            **{k: v for k, v in request.items() if k != "url"},
        )
        expected = 413 if route.endswith("numbers") else 200
        assert alone.status_code == expected, (route, alone.text[:300])
    assert httpx.get(f"{server.base}/health/ready", timeout=30).status_code == 200


def test_idle_senders_hold_the_body_budget_only_until_their_deadline(tiny_model_root):
    """Two connections declare bodies that fill the budget and send one byte: the budget is
    theirs for the body's deadline (the grace plus a second per MiB), then they are answered
    408 and everyone else is served again."""
    import socket
    import time

    server = Server(
        tiny_model_root,
        max_upload_bytes=2**20,
        max_request_bytes=2 * 2**20,
        max_buffered_bytes=4 * 2**20,
        body_grace_s=1,
    )
    try:
        server.wait_ready()
        png = noise_png(2000)
        idle, received = [], []
        for _ in range(2):
            conn = socket.create_connection(("127.0.0.1", server.port))
            conn.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 2097152\r\n\r\nx"
            )
            idle.append(conn)
        time.sleep(0.3)
        post = {"content": png, "headers": {"content-type": "image/png"}, "timeout": 30}
        refused = httpx.post(f"{server.base}/predict", **post)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        for conn in idle:  # deadline: 1 s + 2 s for 2 MiB
            conn.settimeout(10)
            answer = b""  # the head and the body may come in separate segments
            while b"}" not in answer and (chunk := conn.recv(4096)):
                answer += chunk
            answer = answer.decode()
            assert answer.startswith("HTTP/1.1 408"), answer
            assert "body_timeout" in answer
            received.append(json.loads(answer.split("\r\n\r\n", 1)[1]))
            conn.close()
        # the documented example's words, with this body's deadline (1 s + 2 s for 2 MiB)
        document = httpx.get(f"{server.base}/openapi.json", timeout=30).json()
        example = documented_error(document, "post", "/predict", 408)["error"]
        example["message"] = re.sub(r"within \d+ s \(\d+ s", "within 3 s (1 s", example["message"])
        assert received == [{"error": example}] * 2
        assert httpx.post(f"{server.base}/predict", **post).status_code == 200
        metrics = httpx.get(f"{server.base}/metrics", timeout=30).text
        assert "http_request_body_bytes_held 0.0" in metrics
    finally:
        server.stop()

"""Bodies the server does not read, on a real server (uvicorn's own connection handling): a GET
or HEAD that carries one, and a body a route refuses before reading it.

uvicorn reads an unread body into the request's buffer (64 KiB, more in the socket's buffer)
while the route runs, and after the answer reads and discards the rest; each byte that arrives
stops the keep-alive timer, so a client trickling a body it declared large held the connection,
and what uvicorn had buffered of it, for as long as it liked. Now such an answer closes the
connection, or (a refused POST) first reads and discards the rest within the body's deadline,
so that a client still sending sees the answer, not a reset, and its connection stays usable.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.helpers import Server, image_bytes

PNG = image_bytes()


@pytest.fixture(scope="module")
def server(tiny_model_root):
    s = Server(tiny_model_root, body_grace_s=1, max_upload_bytes=200_000, max_request_bytes=10**6)
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def _connect(server: Server) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", server.port))
    conn.settimeout(10)
    return conn


def _answer(conn: socket.socket) -> tuple[str, dict[str, str]]:
    """The status line and headers of one answer (its body read by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(rest) < int(headers.get("content-length", 0)):
        rest += conn.recv(65536)
    return status, headers


def _closed_within(conn: socket.socket, seconds: float, trickle: bool = False) -> bool:
    """Whether the server closes ``conn`` within ``seconds`` (the client trickling a byte
    every 0.1 s meanwhile, if asked)."""
    deadline = time.monotonic() + seconds
    conn.settimeout(0.1)
    while time.monotonic() < deadline:
        try:
            if trickle:
                conn.sendall(b"x")
            if conn.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
    return False


def test_gets_with_unread_bodies_are_answered_and_their_connections_closed(server):
    """100 connections each send a GET declaring a 1 GB body and 100 KB of it: each is
    answered 200 with ``Connection: close`` and closed by the server (which then holds none
    of it: ``benchmarks/unread_bodies.py`` measures the memory); nothing waits for the body."""
    conns = []
    for i in range(100):
        conn = _connect(server)
        path = "/health" if i % 2 else "/model"
        conn.sendall(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n".encode()
            + b"x" * 100_000
        )
        conns.append(conn)
    for conn in conns:
        status, headers = _answer(conn)
        assert status == "HTTP/1.1 200 OK" and headers["connection"] == "close", headers
    assert all(_closed_within(conn, 5) for conn in conns)
    for conn in conns:
        conn.close()


def test_a_trickled_get_body_does_not_keep_the_connection(server):
    conn = _connect(server)
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nxxxxx")
    status, headers = _answer(conn)
    assert status == "HTTP/1.1 200 OK" and headers["connection"] == "close"
    assert _closed_within(conn, 3, trickle=True)
    conn.close()


def _refused_post(body_sent: bytes, length: int) -> bytes:
    head = (
        "POST /v2/models/resnet/infer HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    return head.encode() + body_sent


def test_a_refused_body_is_read_to_its_end_then_answered_on_a_usable_connection(server):
    """A route that refuses before reading (an unknown model: 404) answers once the rest of
    the body has come; the connection then serves the next request."""
    conn = _connect(server)
    body = b"{" + b" " * 199_998 + b"}"
    conn.sendall(_refused_post(body[:1000], len(body)))
    time.sleep(0.5)
    conn.settimeout(0.2)
    with pytest.raises(TimeoutError):  # no answer while the body is still coming
        conn.recv(1)
    conn.settimeout(10)
    conn.sendall(body[1000:])
    status, headers = _answer(conn)
    assert status == "HTTP/1.1 404 Not Found" and "connection" not in headers
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _answer(conn)[0] == "HTTP/1.1 200 OK"
    conn.close()


def test_a_refused_body_that_stops_coming_is_answered_at_its_deadline_and_closed(server):
    """The rest never comes: the refusal is sent at the body's deadline (a grace of 1 s, then
    1 MiB/s) with ``Connection: close``, and the connection closes under a trickle."""
    conn = _connect(server)
    started = time.monotonic()
    conn.sendall(_refused_post(b"{", 100_000))
    status, headers = _answer(conn)
    waited = time.monotonic() - started
    assert status == "HTTP/1.1 404 Not Found" and headers["connection"] == "close"
    assert 0.9 < waited < 5, waited
    assert _closed_within(conn, 3, trickle=True)
    conn.close()


def test_a_client_waiting_for_100_continue_is_refused_at_once_and_closed(server):
    """It has sent nothing of the body: the refusal comes at once, without ``100 Continue``,
    and the connection closes (what it would send next is the body, not a request)."""
    conn = _connect(server)
    head = _refused_post(b"", 100_000).replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")
    started = time.monotonic()
    conn.sendall(head)
    status, headers = _answer(conn)
    assert time.monotonic() - started < 0.9
    assert status == "HTTP/1.1 404 Not Found" and headers["connection"] == "close"
    assert _closed_within(conn, 3)
    conn.close()


def test_a_content_length_too_long_to_believe_is_bounded_like_a_stream(server):
    """19 digits (httptools takes up to 2**64 - 1; the server believes 18 at most): the body
    is bounded as a stream would be, so one that stops coming is answered 408 at the deadline
    of the largest body (a grace of 1 s, then 1 MiB/s for the 1 MB cap) and closed."""
    conn = _connect(server)
    started = time.monotonic()
    conn.sendall(
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 9999999999999999999\r\n\r\n\x89PNG"
    )
    status, headers = _answer(conn)
    assert status == "HTTP/1.1 408 Request Timeout" and headers["connection"] == "close"
    assert 1.5 < time.monotonic() - started < 6
    assert _closed_within(conn, 3, trickle=True)
    conn.close()

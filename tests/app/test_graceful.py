"""``app/graceful.py`` in-process: connections the kernel queued are taken and answered at a
stop, TLS configs keep TLS for them, uvicorn's default (no shutdown timeout) stops cleanly, and
the uvicorn parts it leans on are still there. The real server under load:
``tests/e2e/test_graceful_stop.py``."""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.graceful import GracefulServer, refuse_new_handshakes


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello " + scope["path"].encode()})


def _server(**config) -> GracefulServer:
    cfg = uvicorn.Config(hello, log_level="warning", **config)
    cfg.load()
    server = GracefulServer(cfg)
    server.lifespan = cfg.lifespan_class(cfg)
    return server


def test_the_uvicorn_parts_it_leans_on_are_there():
    for protocol in (H11Protocol, HttpToolsProtocol):
        assert callable(protocol.shutdown)
        assert "self.cycle" in inspect.getsource(protocol.__init__)
        assert "response_complete" in inspect.getsource(protocol)
    for name in ("_wait_tasks_to_complete", "shutdown", "startup"):
        assert callable(getattr(uvicorn.Server, name))
    source = inspect.getsource(uvicorn.Server)
    for part in ("self.servers", "self.server_state", "self.lifespan", "self.force_exit"):
        assert part in source
    assert "connections" in inspect.getsource(uvicorn.server.ServerState)


def test_connections_queued_when_the_listener_closes_are_answered():
    """Three clients connect and send while nobody accepts (the kernel queues them); the stop's
    drain takes them from the queue and each gets its answer."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    port = listener.getsockname()[1]
    answers: list[bytes] = []
    clients = []
    for i in range(3):
        c = socket.create_connection(("127.0.0.1", port), timeout=15)
        c.sendall(f"GET /c{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        clients.append(c)

    def read(c: socket.socket) -> None:
        data = b""
        while chunk := c.recv(4096):
            data += chunk
        answers.append(data)

    readers = [threading.Thread(target=read, args=(c,)) for c in clients]
    for t in readers:
        t.start()

    async def drain() -> int:
        server = _server()
        return await server._take_queued(asyncio.get_running_loop(), listener)

    async def main() -> int:
        taken = await drain()
        for _ in range(200):  # the answers go out on the loop
            if all(not t.is_alive() for t in readers):
                break
            await asyncio.sleep(0.01)
        return taken

    assert asyncio.run(main()) == 3
    for t in readers:
        t.join(timeout=15)
    assert sorted(a.split(b"\r\n", 1)[0] for a in answers) == [b"HTTP/1.1 200 OK"] * 3
    for i in range(3):  # each its own answer (chunked: the body sits between chunk sizes)
        assert sum(f"hello /c{i}".encode() in a for a in answers) == 1
    assert listener.fileno() == -1  # closed after the drain
    with socket.socket() as late:  # nothing listens any more
        assert late.connect_ex(("127.0.0.1", port)) != 0


def test_queued_connections_keep_the_servers_tls(monkeypatch):
    """A server configured with TLS hands its queued connections to the loop with the same TLS
    context (served as plain HTTP they would fail the handshake)."""
    seen = []

    async def connect_accepted_socket(factory, sock, *, ssl=None, **kwargs):
        seen.append(ssl)
        sock.close()

    server = _server()
    marker = object()
    server.config.ssl = marker  # what Config.load makes of ssl_certfile/ssl_keyfile
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())

    async def main():
        loop = asyncio.get_running_loop()
        monkeypatch.setattr(loop, "connect_accepted_socket", connect_accepted_socket)
        return await server._take_queued(loop, listener)

    assert asyncio.run(main()) == 1 and seen == [marker]
    client.close()


def test_stops_with_uvicorns_default_of_no_shutdown_timeout():
    cfg = uvicorn.Config(hello, host="127.0.0.1", port=0, log_level="warning")
    assert cfg.timeout_graceful_shutdown is None
    server = GracefulServer(cfg)

    async def main():
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        server.should_exit = True
        await asyncio.wait_for(task, 10)

    asyncio.run(main())  # no TypeError from the idle grace's min(1.0, None)
    assert server.started


def test_new_handshakes_are_dropped_and_made_connections_kept():
    """After ``refuse_new_handshakes`` a connect gets no answer (its SYN is dropped, so no
    connection can complete between the last accept and the close and be reset), while a
    connection made before goes on both ways; on IPv4, and IPv6 where the machine has it."""
    families = [(socket.AF_INET, "127.0.0.1")]
    if _has_ipv6_loopback():
        families.append((socket.AF_INET6, "::1"))
    for family, host in families:
        with socket.create_server((host, 0), family=family) as listener:
            port = listener.getsockname()[1]
            made = socket.create_connection((host, port), timeout=5)
            accepted, _ = listener.accept()
            assert refuse_new_handshakes(listener)
            with made, accepted:
                made.sendall(b"ping")
                assert accepted.recv(4) == b"ping"
                accepted.sendall(b"pong")
                assert made.recv(4) == b"pong"
            try:
                socket.create_connection((host, port), timeout=0.5).close()
                raise AssertionError("a new connection was made through the filter")
            except TimeoutError:
                pass
            listener.setblocking(False)
            try:
                listener.accept()
                raise AssertionError("a connection was queued through the filter")
            except BlockingIOError:
                pass


def test_no_filter_on_a_unix_socket(tmp_path):
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "s"))
        listener.listen()
        assert refuse_new_handshakes(listener) is False


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False

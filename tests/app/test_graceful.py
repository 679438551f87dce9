"""``app/graceful.py`` in-process: connections the kernel queued are taken and answered at a
stop, TLS configs keep TLS for them, uvicorn's default (no shutdown timeout) stops cleanly, and
the uvicorn parts it leans on are still there. The real server under load:
``tests/e2e/test_graceful_stop.py``."""

from __future__ import annotations

import asyncio
import inspect
import socket
import sys
import threading

import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

import app.graceful
from app.graceful import (
    _DROP_SYN,
    _SO_ATTACH_FILTER,
    GracefulServer,
    _SockFprog,
    handshakes_under_way,
    refuse_new_handshakes,
)


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


linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="socket filters (SO_ATTACH_FILTER) are Linux's"
)


@linux_only
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


@linux_only
def test_the_filter_keeps_every_packet_but_a_bare_syn():
    """On a client's socket the same program must let the server's SYN-ACK (SYN and ACK set)
    and every later packet through: a program that dropped more would fail this connect."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.socket()
        program = _SockFprog(len(_DROP_SYN), _DROP_SYN)
        client.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(program))
        client.settimeout(5)
        with client:
            client.connect(listener.getsockname())
            accepted, _ = listener.accept()
            with accepted:
                accepted.sendall(b"x" * 100_000)
                got = b""
                while len(got) < 100_000:
                    got += client.recv(65536)
                assert got == b"x" * 100_000


def test_handshakes_under_way_counts_syn_recv_on_the_ports(tmp_path):
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n"
    tcp = tmp_path / "tcp"
    tcp.write_text(
        header
        + "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n"  # listen
        + "   1: 0100007F:1F90 0100007F:D431 03 00000000:00000000 01:00000064 00000000\n"  # begun
        + "   2: 0100007F:1F90 0100007F:D432 01 00000000:00000000 00:00000000 00000000\n"  # made
        + "   3: 0100007F:1F91 0100007F:D433 03 00000000:00000000 01:00000064 00000000\n"  # other
    )
    tcp6 = tmp_path / "tcp6"
    tcp6.write_text(
        header
        + "   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D434 03"
        + " 00000000:00000000 01:00000064 00000000\n"
    )
    assert handshakes_under_way({0x1F90}, (str(tcp), str(tcp6))) == 2
    assert handshakes_under_way({0x1F91}, (str(tcp), str(tcp6))) == 1
    assert handshakes_under_way({80}, (str(tcp), str(tcp6))) == 0
    assert handshakes_under_way({0x1F90}, (str(tmp_path / "none"),)) is None


@pytest.mark.parametrize("shared", [False, True])
def test_the_stop_filters_its_own_listener_before_taking_the_queue(monkeypatch, shared):
    """The filter goes on before the queue is taken (else a connection could complete after
    the last accept); a listener passed in (shared with other workers) gets none."""
    calls = []
    take = GracefulServer._take_queued

    def refuse(listener):
        calls.append("filter")
        return True

    async def taking(self, loop, listener):
        calls.append("take")
        return await take(self, loop, listener)

    monkeypatch.setattr(app.graceful, "refuse_new_handshakes", refuse)
    monkeypatch.setattr(GracefulServer, "_take_queued", taking)
    cfg = uvicorn.Config(hello, host="127.0.0.1", port=0, log_level="warning")
    server = GracefulServer(cfg)
    sockets = [socket.create_server(("127.0.0.1", 0))] if shared else None

    async def main():
        task = asyncio.create_task(server.serve(sockets=sockets))
        while not server.started:
            await asyncio.sleep(0.01)
        server.should_exit = True
        await asyncio.wait_for(task, 10)

    asyncio.run(main())
    assert calls == (["take"] if shared else ["filter", "take"])


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

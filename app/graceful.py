"""A graceful stop that answers every request that got a connection.

uvicorn's own stop (``Server.shutdown``) closes the listening socket, which resets the
connections the kernel had accepted but the server had not yet taken from the queue, and then
closes every connection without a request in progress, including one accepted a moment ago
whose request is still on its way or unread. Measured with uvicorn's own stop: ``podman stop``
of the image under 16 clients, each on new connections, reset 5 to 7 of about 130 connections;
SIGTERM to the server on the host, 4 to 14 of about 250.

``GracefulServer`` changes the order, and stops new handshakes first:

1. The listening sockets stay open while uvicorn's servers stop accepting, and everything the
   kernel has queued is taken and handed to the loop as ordinary connections; only then are
   they closed. Closing a listener resets every connection whose handshake completed after the
   last ``accept``, and in a Python server that gap is not microseconds: the thread that
   accepted waits for the GIL (held by the batcher or a request's thread) before it closes.
   Measured (``benchmarks/graceful_stops.py --tiny``) with the queue taken but nothing else,
   SIGTERM under 16 clients lost one connection in 4 of 75 stops. So on Linux a listener this
   process alone holds first gets a socket filter (classic BPF, no privilege needed) that
   drops new SYNs: no handshake starts after that; those under way (``SYN_RECV`` in
   ``/proc/net/tcp``) are waited for, at most ``SETTLE_MAX_S``, and taken with the queue. A
   handshake not done by then (a round trip over a second, a lost packet: the filter also
   drops a client's resent SYN) is still reset at the close. A client whose SYN was dropped
   resends it a second later and finds the port closed (refused: it never had a connection),
   so a client arriving during the stop learns of it about a second later than before. With
   the filter, none lost in 100 stops. A listener shared with other processes (uvicorn's
   ``--workers``, ``--fd``, systemd's sockets) gets no filter: the others still accept on it.
2. Connections with a request in progress are told to close after their answer (uvicorn's
   ``shutdown``). Connections without one (new, or idle between keep-alive requests) get
   ``IDLE_GRACE_S`` for a request to start: one that starts is answered, then closed; one still
   idle after that is closed, as uvicorn closes it.
3. Then uvicorn's own wait for in-flight requests (``timeout_graceful_shutdown``) and the
   lifespan shutdown.

It leans on uvicorn's own parts, the ones its ``shutdown`` uses: the connections' ``cycle``
and ``shutdown()``, the server's ``servers``, ``server_state``, ``lifespan`` and
``_wait_tasks_to_complete``; ``tests/app/test_graceful.py`` checks that the installed uvicorn
still has them, and ``tests/e2e/test_graceful_stop.py`` stops the real server under load.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import socket
import sys
import time

import uvicorn

log = logging.getLogger("app")

IDLE_GRACE_S = 1.0  # for a connection without a request in progress to start one
SETTLE_MAX_S = 1.0  # for handshakes under way when new SYNs are dropped to complete


class GracefulServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        log.info("Shutting down: accepting no new connections")
        loop = asyncio.get_running_loop()
        # 1. Hold each listening socket open past uvicorn's close, take what is queued, close.
        held = []
        for server in self.servers:
            for sock in server.sockets or ():
                try:
                    held.append(socket.socket(fileno=os.dup(sock.fileno())))
                except OSError as exc:  # no descriptor to spare: uvicorn's own stop for this one
                    log.warning("cannot hold the listening socket open: %s", exc)
            server.close()
        for sock in sockets or []:
            sock.close()
        alone = not sockets and self.config.fd is None  # no other process accepts on them
        filtered = [listener for listener in held if alone and refuse_new_handshakes(listener)]
        if filtered:  # handshakes under way complete and join the queue
            await _handshakes_done({listener.getsockname()[1] for listener in filtered})
        taken = 0
        for listener in held:
            taken += await self._take_queued(loop, listener)
        if taken:
            log.info("took %d queued connection(s) before closing the listener", taken)

        # 2. In-progress requests close after their answer; idle connections get a moment.
        timeout = self.config.timeout_graceful_shutdown
        deadline = time.monotonic() + (
            IDLE_GRACE_S if timeout is None else min(IDLE_GRACE_S, timeout)
        )
        idle: dict = {}
        told: set = set()
        while True:
            # (re)scanned each round: a connection made just before the listener closed joins
            for connection in list(self.server_state.connections):
                if connection in told or connection in idle:
                    continue
                if _in_progress(connection):
                    connection.shutdown()  # answered, then closed
                    told.add(connection)
                else:
                    idle[connection] = getattr(connection, "cycle", None)
            for connection, cycle in list(idle.items()):
                if connection not in self.server_state.connections:
                    del idle[connection]  # the client closed it
                elif getattr(connection, "cycle", None) is not cycle:
                    connection.shutdown()  # a request started: answered, then closed
                    told.add(connection)
                    del idle[connection]
            if not idle or self.force_exit or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.01)
        for connection in idle:
            connection.shutdown()  # still idle: closed, as uvicorn closes it

        # 3. uvicorn's wait for in-flight requests, then the lifespan shutdown.
        await asyncio.sleep(0.1)
        try:
            async with asyncio.timeout(timeout):
                await self._wait_tasks_to_complete()
        except TimeoutError:
            log.error(
                "Cancel %s running task(s), timeout graceful shutdown exceeded",
                len(self.server_state.tasks),
            )
            for task in self.server_state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()

    async def _take_queued(self, loop: asyncio.AbstractEventLoop, listener: socket.socket) -> int:
        """Accept every connection the kernel has queued on ``listener``, serve each as uvicorn
        would (TLS included), then close ``listener``. Returns how many were taken."""
        listener.setblocking(False)
        taken = []
        with contextlib.closing(listener):
            while True:
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionAbortedError:
                    continue  # that client gave up while queued; the next may not have
                except OSError as exc:  # no descriptor to spare (EMFILE), or the listener is gone
                    log.warning("stopped taking queued connections: %s", exc)
                    break
                taken.append(conn)
        served = 0
        for conn in taken:
            try:
                await loop.connect_accepted_socket(self._protocol, conn, ssl=self.config.ssl)
                served += 1
            except (OSError, RuntimeError) as exc:  # this one is lost; the others still served
                log.warning("could not serve a queued connection: %s", exc)
                conn.close()
        return served

    def _protocol(self) -> asyncio.Protocol:
        """A protocol instance as uvicorn's ``startup`` makes one for each connection."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )


class _SockFilter(ctypes.Structure):  # struct sock_filter, <linux/filter.h>
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):  # struct sock_fprog
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


_SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>; not in Python's socket module
# A TCP socket's filter sees the packet from its TCP header: byte 13 holds the flags.
_DROP_SYN = (_SockFilter * 5)(
    _SockFilter(0x30, 0, 0, 13),  # ldb [13]
    _SockFilter(0x54, 0, 0, 0x12),  # and #(SYN|ACK)
    _SockFilter(0x15, 0, 1, 0x02),  # jeq #SYN (a SYN alone opens a handshake)
    _SockFilter(0x06, 0, 0, 0),  # ret #0: dropped
    _SockFilter(0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: everything else kept whole
)


def refuse_new_handshakes(listener: socket.socket) -> bool:
    """Drop the SYNs that reach a TCP ``listener`` from now on (Linux); handshakes under way and
    connections already made are untouched. False where it cannot (another system, another
    kind of socket): the listener then closes as uvicorn closes it."""
    if not sys.platform.startswith("linux") or listener.family not in (
        socket.AF_INET,
        socket.AF_INET6,
    ):
        return False
    program = _SockFprog(len(_DROP_SYN), _DROP_SYN)
    try:  # the kernel copies the program: it need not outlive this call
        listener.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, bytes(program))
    except OSError as exc:
        log.warning("cannot stop new handshakes before closing the listener: %s", exc)
        return False
    return True


async def _handshakes_done(ports: set[int], limit_s: float = SETTLE_MAX_S) -> None:
    """Wait until no handshake is under way on ``ports`` (at most ``limit_s``; where
    ``/proc/net/tcp`` cannot be read, a tenth of a second)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        under_way = handshakes_under_way(ports)
        if under_way is None:
            await asyncio.sleep(0.1)
            return
        if under_way == 0:
            return
        await asyncio.sleep(0.01)


def handshakes_under_way(
    ports: set[int], tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")
) -> int | None:
    """Connections to ``ports`` in ``SYN_RECV`` (their handshake begun, not done), from
    ``/proc/net/tcp`` and ``tcp6`` (this network namespace's); ``None`` where unreadable."""
    count, read = 0, False
    for table in tables:
        try:
            with open(table) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        read = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "03" and int(fields[1][-4:], 16) in ports:
                count += 1
    return count if read else None


def _in_progress(connection) -> bool:
    cycle = getattr(connection, "cycle", None)
    return cycle is not None and not cycle.response_complete

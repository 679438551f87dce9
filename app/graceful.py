"""A graceful stop that answers every request that got a connection.

uvicorn's own stop (``Server.shutdown``) closes the listening socket, which resets the
connections the kernel had accepted but the server had not yet taken from the queue, and then
closes every connection without a request in progress, including one accepted a moment ago
whose request is still on its way or unread: measured on the real image, ``podman stop`` under 16
clients reset 5 to 7 of about 130 connections (``tests/e2e/test_container.py``).

``GracefulServer`` changes the order, and nothing else:

1. The listening sockets stay open while uvicorn's servers stop accepting, and everything the
   kernel has queued is taken and handed to the loop as ordinary connections; only then are
   they closed (a connection completing in the microseconds between the last accept and the
   close is still reset: no server can take those).
2. Connections with a request in progress are told to close after their answer (uvicorn's
   ``shutdown``). Connections without one (new, or idle between keep-alive requests) get
   ``IDLE_GRACE_S`` for a request to start: one that starts is answered, then closed; one still
   idle after that is closed, as uvicorn closes it.
3. Then uvicorn's own wait for in-flight requests (``timeout_graceful_shutdown``) and the
   lifespan shutdown.

It leans on uvicorn's connection objects (their ``cycle``, ``shutdown()``), the same ones
uvicorn's ``shutdown`` uses; ``tests/app/test_graceful.py`` pins that down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

import uvicorn

log = logging.getLogger("app")

IDLE_GRACE_S = 1.0  # for a connection without a request in progress to start one


class GracefulServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        log.info("Shutting down: accepting no new connections")
        loop = asyncio.get_running_loop()
        # 1. Hold each listening socket open past uvicorn's close, take what is queued, close.
        held = []
        for server in self.servers:
            for sock in server.sockets or ():
                held.append(socket.socket(fileno=os.dup(sock.fileno())))
            server.close()
        for sock in sockets or []:
            sock.close()
        taken = 0
        for listener in held:
            taken += await self._take_queued(loop, listener)
        if taken:
            log.info("took %d queued connection(s) before closing the listener", taken)

        # 2. In-progress requests close after their answer; idle connections get a moment.
        deadline = time.monotonic() + min(IDLE_GRACE_S, self.config.timeout_graceful_shutdown)
        idle = {}
        for connection in list(self.server_state.connections):
            if _in_progress(connection):
                connection.shutdown()
            else:
                idle[connection] = getattr(connection, "cycle", None)
        while idle and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            for connection, cycle in list(idle.items()):
                if connection not in self.server_state.connections:
                    del idle[connection]  # the client closed it
                elif getattr(connection, "cycle", None) is not cycle:
                    connection.shutdown()  # a request started: answered, then closed
                    del idle[connection]
        for connection in idle:
            connection.shutdown()  # still idle: closed, as uvicorn closes it

        # 3. uvicorn's wait for in-flight requests, then the lifespan shutdown.
        await asyncio.sleep(0.1)
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
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
        would, then close ``listener``. Returns how many were taken."""
        listener.setblocking(False)
        taken = []
        with contextlib.closing(listener):
            while True:
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # the listener is gone (EBADF, EINVAL): nothing queued
                    log.warning("listening socket closed while draining: %s", exc)
                    break
                taken.append(conn)
        for conn in taken:
            await loop.connect_accepted_socket(self._protocol, conn)
        return len(taken)

    def _protocol(self) -> asyncio.Protocol:
        """A protocol instance as uvicorn's ``startup`` makes one for each connection."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )


def _in_progress(connection) -> bool:
    cycle = getattr(connection, "cycle", None)
    return cycle is not None and not cycle.response_complete

"""``HEAD`` for every ``GET`` route: the ``GET`` answer's status and headers, without its body
(RFC 9110 9.3.2). FastAPI routes answer ``HEAD`` with 405; monitors and link checkers send it.
A path without ``GET`` still answers 405, with its ``Allow`` header."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGetMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # the body's chunks are dropped; its headers went out as they were
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        # The same scope, changed and restored: the route the router sets on it is what the
        # metrics middleware (outside this one) labels the request with.
        scope["method"] = "GET"
        try:
            await self.app(scope, receive, without_body)
        finally:
            scope["method"] = "HEAD"

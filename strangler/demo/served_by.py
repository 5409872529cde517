"""`X-Served-By`: the header each sample app puts on every response, so the demo can show who answered."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SERVED_BY = "X-Served-By"


class ServedByMiddleware:
    """Adds `X-Served-By: <name>` to every HTTP response of the wrapped app, error responses included."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self.app = app
        self.name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(SERVED_BY, self.name)
            await send(message)

        await self.app(scope, receive, send_marked)

"""An echo upstream: a uvicorn server in a thread that answers JSON describing exactly what it received.

The answer is `{"server", "method", "raw_path", "query_string", "headers", "body_length", "body_sha256",
"client", "http_version"}`; strings carry the received bytes decoded as latin-1, so that
`value.encode("latin-1")` gives them back unchanged. Request headers steer the answer:

    x-echo-delay: SECONDS      answer after sleeping (the body is read first)
    x-echo-download: N         answer N bytes of `pattern(N)` instead of JSON (with Content-Length)
    x-echo-chunked: 1          leave Content-Length out, so that the response is chunked
    x-echo-drip: N             answer N chunks of 1 KiB, one every 20 ms, chunked; stop when the peer goes
                               away (the count sent is kept in `drips`, keyed by the x-drip-id header)
    x-reflect-NAME: VALUE      add the response header NAME: VALUE, bytes as received
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import uvicorn

from tests.support.ports import free_port

BLOCK = bytes(range(256)) * 256  # 64 KiB


def pattern(n: int) -> Iterator[bytes]:
    """The `n` bytes a download of `n` answers, in blocks of 64 KiB."""
    while n > 0:
        piece = BLOCK[: min(n, len(BLOCK))]
        n -= len(piece)
        yield piece


def pattern_sha256(n: int) -> str:
    digest = hashlib.sha256()
    for piece in pattern(n):
        digest.update(piece)
    return digest.hexdigest()


def _text(value: bytes) -> str:
    return value.decode("latin-1")


class ThreadedUvicorn:
    """An ASGI app served by uvicorn on a free loopback port, in a daemon thread of this process."""

    def __init__(self, app: Any, *, http: str = "httptools") -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            loop="asyncio",
            http=http,
            ws="none",
            lifespan="off",
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # report the real peer, not what X-Forwarded-For claims
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                return
            if not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        raise RuntimeError(f"uvicorn did not start on port {self.port}")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)


class EchoUpstream:
    """Counts requests (when their head arrives) and keeps a record of each complete one."""

    def __init__(self, name: str = "echo") -> None:
        self.name = name
        self.count = 0
        self.records: list[dict[str, Any]] = []
        self.drips: dict[bytes, dict[str, Any]] = {}
        self._server = ThreadedUvicorn(self)

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> EchoUpstream:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def last(self) -> dict[str, Any]:
        return self.records[-1]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.count += 1
        digest = hashlib.sha256()
        length = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            digest.update(chunk)
            length += len(chunk)
            more = message.get("more_body", False)
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        record = {
            "server": self.name,
            "method": scope["method"],
            "raw_path": _text(scope["raw_path"]),
            "query_string": _text(scope["query_string"]),
            "headers": [[_text(k), _text(v)] for k, v in headers],
            "body_length": length,
            "body_sha256": digest.hexdigest(),
            "client": scope["client"][0] if scope.get("client") else None,
            "http_version": scope["http_version"],
        }
        self.records.append(record)
        controls = {k[len(b"x-echo-") :]: v for k, v in headers if k.startswith(b"x-echo-")}
        reply = [(k[len(b"x-reflect-") :], v) for k, v in headers if k.startswith(b"x-reflect-")]
        if b"delay" in controls:
            await asyncio.sleep(float(controls[b"delay"]))
        if b"drip" in controls:
            drip_id = dict(headers).get(b"x-drip-id", b"")
            await self._drip(receive, send, int(controls[b"drip"]), self.drips.setdefault(drip_id, {}))
            return
        if b"download" in controls:
            await self._download(send, int(controls[b"download"]), reply, chunked=b"chunked" in controls)
            return
        body = orjson.dumps(record)
        reply += [(b"content-type", b"application/json")]
        if b"chunked" not in controls:
            reply.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": reply})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _drip(receive: Any, send: Any, n: int, progress: dict[str, Any]) -> None:
        progress.update(sent=0, disconnected=False, finished=False)
        gone = asyncio.create_task(receive())  # the body is read: the next message is http.disconnect
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for _ in range(n):
            if gone.done():
                progress["disconnected"] = True
                return
            await send({"type": "http.response.body", "body": b"d" * 1024, "more_body": True})
            progress["sent"] += 1
            await asyncio.sleep(0.02)
        gone.cancel()
        await send({"type": "http.response.body", "body": b""})
        progress["finished"] = True

    @staticmethod
    async def _download(send: Any, n: int, reply: list[tuple[bytes, bytes]], *, chunked: bool) -> None:
        reply += [(b"content-type", b"application/octet-stream")]
        if not chunked:
            reply.append((b"content-length", str(n).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": reply})
        for piece in pattern(n):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def header_values(record: dict[str, Any], name: str) -> list[bytes]:
    """Every value of header `name` (lower-case) in an echo record, as the bytes the upstream received."""
    return [v.encode("latin-1") for k, v in record["headers"] if k == name]

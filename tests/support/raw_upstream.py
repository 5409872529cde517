"""A raw TCP upstream (asyncio, in a thread) for what a real HTTP server would not do.

Behaviours:
    "canned"       read one request, answer `response` byte for byte, close
    "hang"         read the request, never answer
    "reset"        read the request (head and Content-Length or chunked body), then reset the connection
    "reset-early"  reset the connection as soon as it is accepted, before reading anything
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from typing import Literal

from tests.support.ports import free_port

Behaviour = Literal["canned", "hang", "reset", "reset-early"]


class RawUpstream:
    def __init__(self, behaviour: Behaviour, response: bytes = b"") -> None:
        self.behaviour = behaviour
        self.response = response
        self.port = free_port()
        self.connections = 0
        self.requests = 0  # request heads read completely
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name=f"raw-upstream-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RawUpstream:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError(f"raw upstream did not start on port {self.port}")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.behaviour == "reset-early":
                _reset(writer)
                return
            head = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            self.heads.append(head)
            self.bodies.append(await _read_body(reader, head))
            if self.behaviour == "hang":
                await asyncio.sleep(3600)
            elif self.behaviour == "reset":
                _reset(writer)
                return
            writer.write(self.response)
            await writer.drain()
            writer.close()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN: SO_LINGER with a zero timeout, then abort."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return await reader.readexactly(length)
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)

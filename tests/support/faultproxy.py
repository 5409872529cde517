"""A fault-injecting TCP proxy on loopback, for the reliability tests (a small stand-in for toxiproxy).

`FaultProxy(target_port)` listens on a free loopback port and forwards every connection to the target,
in an asyncio loop of its own thread. Faults apply to connections accepted after they are set:

    latency=SECONDS      every chunk waits this long before it is forwarded, in both directions
    bandwidth=BYTES      at most this many bytes per second per direction and connection
    reset_after=N        forward N bytes of the client's, then reset (RST) the client and close the target
    mode="blackhole"     accept, read and discard what the client sends, never answer, never close
    mode="close"         accept and close at once (FIN), before reading anything
    refuse() / listen()  stop listening (connections refused) and start again, on the same port

Only loopback addresses are accepted as targets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any, Literal

from tests.support.ports import free_port

Mode = Literal["pass", "blackhole", "close"]


@dataclass(frozen=True)
class Faults:
    mode: Mode = "pass"
    latency: float = 0.0
    bandwidth: int | None = None
    reset_after: int | None = None


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        if not ipaddress.ip_address(target_host).is_loopback:
            raise ValueError(f"the fault proxy forwards to loopback only, not {target_host}")
        self.target = (target_host, target_port)
        self.port = free_port()
        self.faults = Faults()
        self.connections = 0  # accepted
        self.bytes_up = 0  # client -> target
        self.bytes_down = 0  # target -> client
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"faultproxy-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self.listen()
        return self

    def set(self, **faults: Any) -> None:
        """Replace the faults for new connections (unnamed ones go back to none)."""
        self.faults = replace(Faults(), **faults)

    def listen(self) -> None:
        if self._server is None:
            self._server = self._call(asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True))

    def refuse(self, drop_open: bool = True) -> None:
        """Stop listening: new connections are refused; open ones are reset too unless `drop_open` is false."""
        server, self._server = self._server, None
        if server is not None:
            self._call(self._close(server, drop_open))

    def stop(self) -> None:
        self.refuse()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _close(self, server: asyncio.Server, drop_open: bool) -> None:
        server.close()
        if drop_open:
            for task in list(self._tasks):
                task.cancel()
        await asyncio.sleep(0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        faults = self.faults
        upstream: asyncio.StreamWriter | None = None
        try:
            if faults.mode == "close":
                return
            if faults.mode == "blackhole":
                while await reader.read(65536):
                    pass
                await asyncio.Event().wait()  # the client closed its side; keep ours open, silent
                return
            try:
                target_reader, upstream = await asyncio.open_connection(*self.target)
            except OSError:
                _reset(writer)
                return
            budget = [faults.reset_after]
            up = asyncio.create_task(self._pipe(reader, upstream, faults, budget, client_side=True))
            down = asyncio.create_task(self._pipe(target_reader, writer, faults, None, client_side=False))
            done, pending = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            if up in done and up.result() == "reset":
                _reset(writer)
                down.cancel()
                return
            await asyncio.wait(pending, timeout=30)  # the other direction finishes what it has
            for task_ in pending:
                task_.cancel()
        except (ConnectionError, asyncio.CancelledError):
            _reset(writer)
        finally:
            self._tasks.discard(task)
            for w in (writer, upstream):
                if w is not None and not w.is_closing():
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, faults: Faults,
                    budget: list[int | None] | None, *, client_side: bool) -> str:
        try:
            while True:
                limit = 65536
                if budget is not None and budget[0] is not None:
                    if budget[0] <= 0:
                        return "reset"
                    limit = min(limit, budget[0])
                chunk = await reader.read(limit)
                if not chunk:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return "eof"
                if faults.latency:
                    await asyncio.sleep(faults.latency)
                await self._write(writer, chunk, faults.bandwidth)
                if client_side:
                    self.bytes_up += len(chunk)
                else:
                    self.bytes_down += len(chunk)
                if budget is not None and budget[0] is not None:
                    budget[0] -= len(chunk)
                    if budget[0] <= 0:
                        await asyncio.sleep(0.05)  # let the target read what was forwarded before the reset
                        return "reset"
        except ConnectionError:
            return "error"

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, chunk: bytes, bandwidth: int | None) -> None:
        if bandwidth is None:
            writer.write(chunk)
            await writer.drain()
            return
        step = max(1, bandwidth // 20)  # slices of 50 ms
        for i in range(0, len(chunk), step):
            writer.write(chunk[i : i + step])
            await writer.drain()
            await asyncio.sleep(len(chunk[i : i + step]) / bandwidth)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()

"""The mirror's upstream client: the proxy's HTTP/1.1 client (`strangler/gateway/client.py`) with a mirror's
request rules on top.

A mirrored request is sent whole with its length (the shadow job captured its body), without the client's
hop-by-hop fields, and a safe one that meets a kept-alive connection the upstream closed meanwhile is tried
once more. The answer is read by the shadow job up to `shadow.max_body`. Each upstream has a pool of its own
for mirrors, apart from the proxy's, so that a slow mirror never holds a connection a primary request waits
for.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator, Mapping

from strangler.gateway.client import Http1UpstreamClient
from strangler.gateway.config import UpstreamConfig
from strangler.gateway.errors import ConnectFailed, UpstreamUnavailable
from strangler.gateway.upstream import UpstreamRequest, UpstreamResponse

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                         "proxy-connection", "content-length", "expect"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class MirrorClient:
    """One upstream as the mirror sees it (see the module docstring); `pool` carries the connections."""

    def __init__(self, name: str, config: UpstreamConfig, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.name = name
        self.timeout = config.timeout
        self.pool = Http1UpstreamClient(name, config, ssl_context=ssl_context)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        headers = request.headers
        for name, _ in headers:
            if name.lower() in _HOP_BY_HOP:
                headers = [(n, v) for n, v in headers if n.lower() not in _HOP_BY_HOP]
                break
        body = request.body
        if body is not None and not isinstance(body, bytes):
            body = await _bytes(body)
        if headers is not request.headers or body is not request.body or body == b"" or request.chunked:
            request = UpstreamRequest(request.method, request.target, headers, body or None, chunked=False)
        pool = self.pool
        reused = pool.idle_connections > 0
        try:
            return await pool.send(request)
        except ConnectFailed:
            raise
        except UpstreamUnavailable:
            # A kept-alive connection the upstream closed as the request went out: a safe request may
            # go again, on a connection of its own this time if no other is idle.
            if not reused or request.method not in _SAFE_METHODS:
                raise
        return await pool.send(request)

    async def aclose(self) -> None:
        await self.pool.aclose()


async def _bytes(body: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in body])


class MirrorClients(Mapping[str, MirrorClient]):
    """A mirror client per configured upstream; a lifecycle part of the proxy process (closes them at stop)."""

    def __init__(self, upstreams: Mapping[str, UpstreamConfig]) -> None:
        self._clients = {name: MirrorClient(name, config) for name, config in upstreams.items()}

    def __getitem__(self, name: str) -> MirrorClient:
        return self._clients[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._clients)

    def __len__(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for client in self._clients.values():
            await client.aclose()

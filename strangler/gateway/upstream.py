"""The upstream port and its aiohttp adapter (the hot path: one pooled session per upstream)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from strangler.gateway.config import UpstreamConfig
from strangler.gateway.errors import ConnectFailed, UpstreamTimeout, UpstreamUnavailable


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    target: str  # normalised path plus "?query" when there is one, percent-encoded as forwarded
    headers: Sequence[tuple[str, str]]
    body: AsyncIterator[bytes] | bytes | None
    chunked: bool = False


class UpstreamResponse(Protocol):
    status: int
    headers: Sequence[tuple[bytes, bytes]]

    def body(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class UpstreamClient(Protocol):
    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send `request` and return once the response status and headers arrived.

        The caller must `close()` the response after reading its body. Raises `ConnectFailed` when no
        byte was sent, `UpstreamUnavailable` when the connection broke or the response was invalid,
        `UpstreamTimeout` when no answer came in time. Never retries by itself.
        """
        ...

    async def aclose(self) -> None: ...


class _AiohttpResponse:
    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.raw_headers

    async def body(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as exc:
            raise UpstreamUnavailable(f"upstream broke off the response: {exc}") from exc
        except TimeoutError as exc:
            raise UpstreamTimeout("upstream stopped sending the response") from exc

    async def close(self) -> None:
        self._resp.release()


class AiohttpUpstreamClient:
    """One upstream, one `aiohttp.ClientSession` with a bounded connection pool; no decompression."""

    def __init__(self, name: str, config: UpstreamConfig) -> None:
        self.name = name
        self._base = URL(config.url)
        self._prefix = self._base.raw_path.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=config.timeout, sock_connect=config.connect_timeout, sock_read=config.timeout
        )
        self._limit = config.pool_size
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limit, limit_per_host=self._limit, ttl_dns_cache=300, enable_cleanup_closed=False
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )
        # aiohttp sends an idempotent request a second time when the connection breaks, even after the
        # upstream read it (and with a streamed body it could resend only what is left). Retries are
        # the gateway's decision (`retry.py`, with its limits and budget); there is no public switch.
        self._session._retry_connection = False
        return self._session

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        session = self._session or self._open()
        url = self._base.with_path(self._prefix + request.target, encoded=True) if "?" not in request.target else (
            URL(str(self._base.origin()) + self._prefix + request.target, encoded=True)
        )
        try:
            resp = await session.request(
                request.method,
                url,
                headers=request.headers,
                data=request.body,
                allow_redirects=False,
                chunked=True if request.chunked else None,
                compress=None,
            )
        except aiohttp.ClientConnectorError as exc:
            raise ConnectFailed(f"cannot connect to upstream {self.name!r}: {exc.os_error}") from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(f"upstream {self.name!r} did not answer in time") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(f"upstream {self.name!r} failed: {exc!r}") from exc
        return _AiohttpResponse(resp)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

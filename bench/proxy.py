"""The proxy benchmark: Strangler against nginx on loopback, in front of one static nginx upstream.

Measured in one run, each with `wrk` at 1 and 50 connections, three times, medians reported: direct to
the upstream; nginx as a reverse proxy; `strangler serve` (its own HTTP/1.1 upstream client); the same
gateway with the aiohttp upstream client it had before (`AiohttpUpstreamClient` below, the "before" of
the client's replacement) and with an httpx one (`HttpxUpstreamClient`); and two floors that show what
the Python stack costs before any gateway logic (uvicorn answering by itself, and uvicorn with a bare
passthrough on strangler's upstream client). Everything but `strangler serve` and nginx runs in
`serve_forked`, which does what `strangler serve` does for its workers (one shared socket, forked uvicorn
workers with the same settings, multiprocess metrics). CPU per request is read from /proc per process tree.

    python bench/proxy.py                  # full run, prints a table, rewrites its section of bench/RESULTS.md
    python bench/proxy.py --duration 3 --repeats 1 --no-write      # quick look
    python bench/proxy.py --profile 10     # also py-spy the strangler workers under 50 connections
    python bench/proxy.py --client httptools-prototype   # also strangler with the prototype client below
    python bench/proxy.py --client mypkg.client:MyUpstreamClient   # ... or with any other UpstreamClient
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib
import multiprocessing
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools
import httpx

from strangler.gateway.config import UpstreamConfig
from strangler.gateway.errors import ConnectFailed, UpstreamTimeout, UpstreamUnavailable
from strangler.gateway.upstream import UpstreamRequest, UpstreamResponse

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "RESULTS.md"
SECTION_START = "<!-- bench/proxy.py: start -->"
SECTION_END = "<!-- bench/proxy.py: end -->"
PATH = "/static"
BODY = ('{"id":42,"kind":"static","items":[1,2,3,4,5],"pad":"' + "x" * 100)[:98] + '"}'
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONNECTIONS = (1, 50)
CLIENT_MARKER = "bench: {} upstream client opened"  # printed by a swapped-in client when it is first used

TARGETS = {
    "throughput_share": 20.0,  # strangler req/s as % of nginx-proxy's at 50 connections, at least
    "added_p50_us": 400.0,  # strangler p50 minus direct p50 at 1 connection, at most
    "cpu_us": 400.0,  # CPU microseconds per proxied request (all proxy processes), at most
}


# --- the httpx upstream client (the comparison the design cites) -------------------------------------------


class _HttpxResponse:
    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.headers = resp.headers.raw

    async def body(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_raw():
                yield chunk
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout("upstream stopped sending the response") from exc
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"upstream broke off the response: {exc!r}") from exc

    async def close(self) -> None:
        await self._resp.aclose()


class HttpxUpstreamClient:
    """The `UpstreamClient` port on `httpx.AsyncClient` (streaming, pooled, no decompression, no retries)."""

    def __init__(self, name: str, config: UpstreamConfig) -> None:
        self.name = name
        self._config = config
        self._client: httpx.AsyncClient | None = None

    def _open(self) -> httpx.AsyncClient:
        cfg = self._config
        client = httpx.AsyncClient(
            base_url=cfg.url,
            timeout=httpx.Timeout(cfg.timeout, connect=cfg.connect_timeout),
            limits=httpx.Limits(max_connections=cfg.pool_size, max_keepalive_connections=cfg.pool_size),
            follow_redirects=False,
            trust_env=False,
        )
        for name in ("user-agent", "accept", "accept-encoding"):  # as the aiohttp adapter skips them
            del client.headers[name]
        self._client = client
        _opened("httpx")
        return client

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        client = self._client or self._open()
        built = client.build_request(request.method, request.target, headers=request.headers, content=request.body)
        try:
            resp = await client.send(built, stream=True)
        except httpx.ConnectError as exc:
            raise ConnectFailed(f"cannot connect to upstream {self.name!r}: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream {self.name!r} did not answer in time") from exc
        except (httpx.HTTPError, OSError) as exc:
            raise UpstreamUnavailable(f"upstream {self.name!r} failed: {exc!r}") from exc
        return _HttpxResponse(resp)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


# --- the aiohttp upstream client (strangler's hot path before `Http1UpstreamClient`: the "before" row) -------


class _AiohttpResponse:
    __slots__ = ("_resp", "status", "headers")

    def __init__(self, resp: Any) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers = resp.raw_headers

    async def body(self) -> AsyncIterator[bytes]:
        import aiohttp

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
    """The `UpstreamClient` port on one `aiohttp.ClientSession` per upstream, exactly as strangler had it:
    a bounded connection pool, no decompression, aiohttp's own retry of idempotent requests switched off."""

    def __init__(self, name: str, config: UpstreamConfig) -> None:
        import aiohttp
        from yarl import URL

        self.name = name
        self._base = URL(config.url)
        self._prefix = self._base.raw_path.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=config.timeout, sock_connect=config.connect_timeout, sock_read=config.timeout
        )
        self._limit = config.pool_size
        self._session: Any = None

    def _open(self) -> Any:
        import aiohttp

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
        self._session._retry_connection = False
        _opened("aiohttp")
        return self._session

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        import aiohttp
        from yarl import URL

        session = self._session or self._open()
        url = self._base.with_path(self._prefix + request.target, encoded=True) if "?" not in request.target else (
            URL(str(self._base.origin()) + self._prefix + request.target, encoded=True)
        )
        try:
            resp = await session.request(
                request.method, url, headers=request.headers, data=request.body, allow_redirects=False,
                chunked=True if request.chunked else None, compress=None,
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


# --- a prototype of a leaner upstream client (to measure what the aiohttp layer costs) ------------------------


class _PrototypeConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; httptools parses the responses as bytes arrive."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.complete = False
        self.closed = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None  # woken by headers, a body chunk, the end or an error

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self.error = UpstreamUnavailable(f"upstream closed the connection: {exc!r}")
        self._wake()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.error = UpstreamUnavailable(f"invalid response from upstream: {exc}")
            self._wake()
            if self.transport is not None:
                self.transport.close()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def wait(self) -> None:
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.headers = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()


class _PrototypeResponse:
    __slots__ = ("_conn", "_idle", "status", "headers")

    def __init__(self, conn: _PrototypeConnection, idle: collections.deque[_PrototypeConnection]) -> None:
        self._conn, self._idle = conn, idle
        self.status, self.headers = conn.status, conn.headers

    async def body(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.chunks:
                yield conn.chunks.popleft()
            elif conn.complete:
                return
            elif conn.error is not None:
                raise conn.error
            else:
                await conn.wait()

    async def close(self) -> None:
        conn = self._conn
        if conn.complete and not conn.closed and conn.parser.should_keep_alive():
            self._idle.append(conn)
        elif conn.transport is not None:
            conn.transport.close()


class PrototypeHttptoolsClient:
    """The `UpstreamClient` port on asyncio.Protocol + httptools with a LIFO keep-alive pool.

    A measuring device, not a product: requests without a body only, no timeouts, no pool limit, a stale
    keep-alive connection is not retried. `--client httptools-prototype` runs strangler with it.
    """

    def __init__(self, name: str, config: UpstreamConfig) -> None:
        from yarl import URL

        url = URL(config.url)
        self.name = name
        self._host, self._port = url.host or "127.0.0.1", url.port or 80
        self._host_header = f"host: {url.host}:{self._port}\r\n".encode()
        self._idle: collections.deque[_PrototypeConnection] = collections.deque()

    async def _connection(self) -> _PrototypeConnection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        try:
            _, conn = await asyncio.get_running_loop().create_connection(_PrototypeConnection, self._host, self._port)
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to upstream {self.name!r}: {exc}") from exc
        return conn

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        if request.body is not None:
            raise UpstreamUnavailable("the prototype client sends no request bodies")
        conn = await self._connection()
        head = [f"{request.method} {request.target} HTTP/1.1\r\n".encode(), self._host_header]
        head += [f"{name}: {value}\r\n".encode() for name, value in request.headers]
        head.append(b"\r\n")
        conn.chunks.clear()
        conn.status = 0
        if conn.transport is None or conn.transport.is_closing():
            raise ConnectFailed(f"upstream {self.name!r}: the pooled connection is gone")
        conn.transport.write(b"".join(head))
        while not conn.status and conn.error is None:
            await conn.wait()
        if conn.error is not None:
            raise conn.error
        return _PrototypeResponse(conn, self._idle)

    async def aclose(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None:
                conn.transport.close()


_OPENED: set[str] = set()


def _opened(kind: str) -> None:
    """Say (once per process) that a swapped-in client is the one in use; the benchmark checks the log."""
    if kind not in _OPENED:
        _OPENED.add(kind)
        print(CLIENT_MARKER.format(kind), file=sys.stderr, flush=True)


def _load_client(spec: str) -> type[Any]:
    if spec == "httpx":
        return HttpxUpstreamClient
    if spec == "aiohttp":
        return AiohttpUpstreamClient
    if spec == "httptools-prototype":
        return PrototypeHttptoolsClient
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


class PassthroughApp:
    """The floor for a Python proxy: forward method, path and headers with strangler's upstream client
    (`Http1UpstreamClient`), stream the answer back; no routing, no header rules, no metrics."""

    def __init__(self, name: str, upstream: UpstreamConfig) -> None:
        from strangler.gateway.client import Http1UpstreamClient

        self._client = Http1UpstreamClient(name, upstream)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in (b"host", b"connection")]
        request = UpstreamRequest(scope["method"], scope["raw_path"].decode(), headers, None)
        resp = await self._client.send(request)
        try:
            out = [(k.lower(), v) for k, v in resp.headers if k.lower() not in (b"connection", b"keep-alive")]
            await send({"type": "http.response.start", "status": resp.status, "headers": out})
            async for chunk in resp.body():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await resp.close()


async def hello_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The server-side floor: uvicorn answering the static body itself."""
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY.encode()})


def _forked_worker(config: Any, sock: socket.socket, app_kind: str, client: str) -> None:
    import uvicorn
    from prometheus_client import CollectorRegistry

    from strangler.gateway.server import uvicorn_config

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    app: Any
    if app_kind == "hello":
        app = hello_app
    elif app_kind == "passthrough":
        app = PassthroughApp(config.default_upstream, config.upstreams[config.default_upstream])
    else:
        from strangler.app import build_proxy

        app = build_proxy(config, CollectorRegistry())  # exactly what a `strangler serve` worker runs...
        if client != "default":  # ...with the upstream clients swapped through the port
            cls = _load_client(client)
            app.clients = {name: cls(name, up) for name, up in config.upstreams.items()}
    uvicorn.Server(uvicorn_config(app, config)).run(sockets=[sock])


def serve_forked(config_path: str, app_kind: str, client: str) -> int:
    """Serve `app_kind` the way `strangler serve` serves its workers, without the admin listener."""
    from prometheus_client import values

    from strangler.config import load_config
    from strangler.gateway.server import bind_socket

    config = load_config(config_path)
    if app_kind == "strangler":
        from strangler.store import upgrade_schema

        upgrade_schema(config.store)  # as the `strangler serve` supervisor does before its workers read flags
    # In the working directory (the benchmark's temporary one), so that it goes even if this process is killed.
    metrics_dir = tempfile.mkdtemp(prefix="metrics-", dir=os.getcwd())
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # as `strangler serve` does: the same metrics cost
    values.ValueClass = values.get_value_class()
    sock = bind_socket(config.listen)
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_forked_worker, args=(config, sock, app_kind, client), daemon=True)
        for _ in range(config.workers)
    ]
    try:
        for worker in workers:
            worker.start()
        # Blocked only now, so that the workers keep the default mask; then wait for a signal or a dead worker.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        while all(worker.is_alive() for worker in workers):
            if signal.sigtimedwait({signal.SIGTERM, signal.SIGINT}, 0.5) is not None:
                return 0
        print("bench: a worker died; stopping", file=sys.stderr, flush=True)
        return 1
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
        shutil.rmtree(metrics_dir, ignore_errors=True)


# --- processes ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from /proc/PID/task/*/children (bounded by the process count)."""
    seen: list[int] = []
    todo = [root]
    while todo and len(seen) < 10_000:
        pid = todo.pop()
        seen.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo.extend(int(p) for p in (task / "children").read_text().split())
    return seen


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of `pids` (each process's threads included), in seconds."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / CLK_TCK


def machine_cpu_seconds() -> tuple[float, float]:
    """(user+nice+system, softirq+irq) of all CPUs from /proc/stat, in seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system) / CLK_TCK, (irq + softirq) / CLK_TCK


def wait_for_quiet(ours: list[int], max_wait: float, threshold: float = 0.25) -> float:
    """Wait (at most `max_wait` s) until processes other than `ours` use under `threshold` cores; return theirs."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0, mine0, t0 = machine_cpu_seconds()[0], cpu_seconds(ours), time.monotonic()
        time.sleep(1.0)
        busy1, mine1, t1 = machine_cpu_seconds()[0], cpu_seconds(ours), time.monotonic()
        others = max(0.0, (busy1 - busy0) - (mine1 - mine0)) / (t1 - t0)
        if others < threshold or time.monotonic() >= deadline:
            return others
        print(f"  waiting for a quieter machine: other processes use {others:.2f} cores", flush=True)


@dataclass
class Service:
    """A process group we started; `stop()` ends the whole group."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pids(self) -> list[int]:
        return process_tree(self.proc.pid)

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers in the group, if any
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(2)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def start_service(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None) -> Service:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env=env, cwd=workdir,
        )
    return Service(name, proc, log)


def wait_ready(service: Service, url: str, timeout: float = 20.0) -> None:
    """Poll `url` until it answers 200 with the static body, or fail with the service's log."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited with {service.proc.returncode}:\n{service.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                body = resp.read().decode()
                if resp.status == 200 and body == BODY:
                    return
                last = (resp.status, body)
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise RuntimeError(f"{service.name} not ready at {url} after {timeout}s ({last!r}):\n{service.log_tail()}")


def nginx_config(workdir: Path, name: str, main: str, http: str) -> Path:
    """A private nginx configuration: everything (pid, logs, temp files) under `workdir`."""
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = "\n".join(f"    {kind}_temp_path {workdir}/{name}-{kind};" for kind in kinds)
    user = "user root;\n" if os.geteuid() == 0 else ""
    text = f"""{user}{main}
pid {workdir}/{name}.pid;
error_log {workdir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp}
    keepalive_timeout 60s;
    keepalive_requests 10000000;
{textwrap.indent(http, "    ")}
}}
"""
    path = workdir / f"{name}.conf"
    path.write_text(text)
    return path


def start_nginx_upstream(workdir: Path, port: int) -> Service:
    conf = nginx_config(
        workdir,
        "upstream",
        "worker_processes 1;",
        f"""server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = {PATH} {{ default_type application/json; return 200 '{BODY}'; }}
}}""",
    )
    return start_service("nginx-upstream", ["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"], workdir)


def start_nginx_proxy(workdir: Path, port: int, upstream_port: int) -> Service:
    # The same per-request work strangler does: forwarding headers and a request id both ways.
    conf = nginx_config(
        workdir,
        "proxy",
        "worker_processes 2;",
        f"""upstream legacy {{
    server 127.0.0.1:{upstream_port};
    keepalive 64;
    keepalive_requests 10000000;
}}
server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
        proxy_pass http://legacy;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Correlation-Id $request_id;
        add_header X-Correlation-Id $request_id;
    }}
}}""",
    )
    return start_service("nginx-proxy", ["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"], workdir)


def strangler_config(workdir: Path, name: str, port: int, upstream_port: int) -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(
        f"""listen: 127.0.0.1:{port}
workers: 2
admin: {{listen: 127.0.0.1:{free_port()}}}
store: sqlite:///{workdir}/{name}.db
limits: {{drain_timeout: 1}}
upstreams:
  legacy: {{url: http://127.0.0.1:{upstream_port}}}
default_upstream: legacy
capabilities:
  static:
    legacy: legacy
    routes: ["GET {PATH}"]
    mode: legacy
"""
    )
    return path


def start_strangler(workdir: Path, port: int, upstream_port: int) -> Service:
    conf = strangler_config(workdir, "strangler", port, upstream_port)
    strangler = shutil.which("strangler") or "strangler"
    return start_service("strangler", [strangler, "--log-level", "WARNING", "serve", "-c", str(conf)], workdir)


@dataclass(frozen=True)
class Forked:
    """A configuration served by `serve_forked`: which app, which upstream client."""

    app: str  # strangler | passthrough | hello
    client: str = "default"  # default (strangler's own) | aiohttp | httpx | httptools-prototype | MODULE:CLASS


def start_forked(workdir: Path, name: str, what: Forked, port: int, upstream_port: int) -> Service:
    conf = strangler_config(workdir, name, port, upstream_port)
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve", str(conf), what.app, what.client]
    return start_service(name, argv, workdir)


# --- wrk ----------------------------------------------------------------------------------------------------


@dataclass
class WrkRun:
    rps: float
    p50_us: float
    p99_us: float
    requests: int
    errors: int
    proxy_cpu_us: float | None  # per request, the proxy's processes
    upstream_cpu_us: float  # per request, the upstream nginx
    wrk_cpu_us: float  # per request, wrk itself
    others_cores: float  # CPU used meanwhile by processes not in the benchmark, in cores (noise)
    softirq_cores: float  # interrupt and softirq time meanwhile (loopback's network stack runs there)


_UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_wrk(output: str) -> tuple[float, float, float, int, int]:
    """(requests/s, p50 µs, p99 µs, requests, errors) from `wrk --latency` output."""

    def latency(pct: str) -> float:
        m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not m:
            raise ValueError(f"no {pct}% latency in wrk output:\n{output}")
        return float(m.group(1)) * _UNITS[m.group(2)]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    if not rps or not total:
        raise ValueError(f"unexpected wrk output:\n{output}")
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    return float(rps.group(1)), latency("50"), latency("99"), int(total.group(1)), errors


def run_wrk(url: str, connections: int, duration: float, proxy: Service | None, upstream: Service) -> WrkRun:
    threads = min(2, connections)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "--latency", url]
    proxy_pids = proxy.pids if proxy else []
    upstream_pids = upstream.pids
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before, irq_before = machine_cpu_seconds()
    started = time.monotonic()
    proxy_before, upstream_before = cpu_seconds(proxy_pids), cpu_seconds(upstream_pids)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    proxy_after, upstream_after = cpu_seconds(proxy_pids), cpu_seconds(upstream_pids)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_after, irq_after = machine_cpu_seconds()
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    rps, p50, p99, requests, errors = parse_wrk(done.stdout)
    per = 1_000_000 / max(requests, 1)
    wrk_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    ours = (proxy_after - proxy_before) + (upstream_after - upstream_before) + wrk_cpu
    return WrkRun(
        rps=rps,
        p50_us=p50,
        p99_us=p99,
        requests=requests,
        errors=errors,
        proxy_cpu_us=(proxy_after - proxy_before) * per if proxy else None,
        upstream_cpu_us=(upstream_after - upstream_before) * per,
        wrk_cpu_us=wrk_cpu * per,
        others_cores=max(0.0, (busy_after - busy_before) - ours) / elapsed,
        softirq_cores=(irq_after - irq_before) / elapsed,
    )


@dataclass
class Measurement:
    target: str
    connections: int
    runs: list[WrkRun] = field(default_factory=list)

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return statistics.median(values) if values else None


# --- profile ------------------------------------------------------------------------------------------------

# Where a sample's time goes: the nearest frame (from the leaf up) that is not the standard library.
COMPONENTS = (
    ("strangler/", "strangler (gateway, routing, headers)"),
    ("prometheus_client/", "prometheus_client (multiprocess metrics)"),
    ("aiohttp/", "aiohttp client"),
    ("yarl/", "aiohttp client"),
    ("multidict/", "aiohttp client"),
    ("httpx/", "httpx client"),
    ("httpcore/", "httpx client"),
    ("h11/", "httpx client"),
    ("anyio/", "httpx client"),
    ("uvicorn/", "uvicorn server (incl. its socket writes)"),
    ("asyncio/runners.py", "event loop (uvloop: polling, reads, callbacks)"),
)


def profile_workers(service: Service, url: str, upstream: Service, seconds: float, workdir: Path) -> str:
    """py-spy (GIL holders only, so idle threads drop out) the workers under 50 connections; summarise."""
    spy = shutil.which("py-spy")
    if spy is None:
        return "py-spy is not installed (`pip install py-spy`); no profile taken."
    workers = [pid for pid in service.pids if pid != service.proc.pid]
    spies = []
    for pid in workers:
        out = workdir / f"profile-{pid}.txt"
        argv = [spy, "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", "250", "--gil", "-f", "raw", "-o", str(out)]
        spies.append((out, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    time.sleep(0.5)
    run = run_wrk(url, 50, seconds, service, upstream)
    stacks: Counter[str] = Counter()
    for out, proc in spies:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(seconds + 20)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(OSError):
            for line in out.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if count.isdigit():
                    stacks[stack] += int(count)
    head = f"{run.rps:.0f} req/s, {_fmt(run.proxy_cpu_us)} µs CPU/request while profiled (py-spy slows it)"
    return head + "\n" + summarize_profile(stacks)


def _frame(frame: str) -> tuple[str, str]:
    """(function (short path), full path) of a py-spy raw frame "function (path/to/module.py:line)"."""
    m = re.match(r"(.*?) \((.*?):\d+\)$", frame)
    if not m:
        return frame, ""
    func, path = m.groups()
    short = path
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in short:
            short = short.split(marker, 1)[1]
    return f"{func} ({short})", path


def _component(frames: list[tuple[str, str]]) -> str:
    for _, path in reversed(frames):
        for marker, name in COMPONENTS:
            if marker in path:
                return name
        if "site-packages/" in path or "/strangler/" in path:
            return "other libraries"
    return "other (standard library)"


def summarize_profile(stacks: Counter[str]) -> str:
    total = sum(stacks.values())
    if not total:
        return "py-spy recorded no samples."
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        own[frames[-1][0]] += count
        parts[_component(frames)] += count
        for name in {f[0] for f in frames}:
            inclusive[name] += count
    lines = [f"{total} samples of the workers' GIL-holding thread", "", "by component (self time):"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in parts.most_common()]
    lines += ["", "self time, top 20 functions:"]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in own.most_common(20)]
    lines += ["", "inclusive time of the request path (top 25 below the event loop):"]
    shown = [(n, c) for n, c in inclusive.most_common() if c < 0.9 * total][:25]
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in shown]
    return "\n".join(lines)


# --- report -------------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 1024 / 1024:.1f} GiB"

    def version(argv: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        return "unknown"

    from importlib.metadata import version as package_version

    import aiohttp
    import uvicorn
    import uvloop

    prometheus_version = package_version("prometheus-client")
    return {
        "date": version(["date", "-u"]),
        "cpus (nproc)": version(["nproc"]),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": version(["nginx", "-v"]),
        "wrk": version(["wrk", "-v"]).split(" Copyright")[0],
        "libraries": f"httptools {httptools.__version__}, uvicorn {uvicorn.__version__}, uvloop {uvloop.__version__}, "
        f"prometheus-client {prometheus_version}; for the comparisons aiohttp {aiohttp.__version__}, "
        f"httpx {httpx.__version__}",
        "python speed": f"sum(range(10**7)) takes {python_speed_ms():.0f} ms (best of 3)",
    }


def python_speed_ms() -> float:
    """A crude yardstick to compare machines: Python-level µs/request scale with it."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        sum(range(10**7))
        best = min(best, time.perf_counter() - started)
    return best * 1000


# name -> (label, how it is started); the order is the order of the run and of the table.
CONFIGS: dict[str, tuple[str, Forked | str | None]] = {
    "direct": ("direct to the nginx upstream", None),
    "nginx-proxy": ("nginx reverse proxy (2 workers)", "nginx"),
    "strangler": ("strangler serve (2 workers)", "strangler"),
    "strangler-aiohttp": ("before: strangler, aiohttp client (2 workers)", Forked("strangler", "aiohttp")),
    "strangler-httpx": ("strangler, httpx client (2 workers)", Forked("strangler", "httpx")),
    "floor-passthrough": ("floor: uvicorn + bare passthrough, same client", Forked("passthrough")),
    "floor-uvicorn": ("floor: uvicorn answering by itself", Forked("hello")),
}


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def results_table(measurements: list[Measurement], labels: dict[str, str]) -> str:
    rows = [
        "| configuration | conns | req/s | p50 µs | p99 µs | proxy CPU µs/req | upstream CPU µs/req | wrk CPU µs/req "
        "| errors | others' CPU, cores | softirq, cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in measurements:
        errors = sum(r.errors for r in m.runs)
        rows.append(
            f"| {labels.get(m.target, m.target)} | {m.connections} | {_fmt(m.median('rps'))} "
            f"| {_fmt(m.median('p50_us'))} | {_fmt(m.median('p99_us'))} | {_fmt(m.median('proxy_cpu_us'))} "
            f"| {_fmt(m.median('upstream_cpu_us'))} | {_fmt(m.median('wrk_cpu_us'))} | {errors} "
            f"| {_fmt(m.median('others_cores'), '.2f')} | {_fmt(m.median('softirq_cores'), '.2f')} |"
        )
    return "\n".join(rows)


def targets_table(measurements: list[Measurement]) -> str:
    by = {(m.target, m.connections): m for m in measurements}

    def med(target: str, conns: int, attr: str) -> float | None:
        m = by.get((target, conns))
        return m.median(attr) if m else None

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**missed**")

    def plural(conns: int) -> str:
        return f"{conns} conn{'s' if conns > 1 else ''}"

    rows = ["| measure | value | target | verdict |", "|---|---:|---:|---|"]
    for name, label in (("strangler", "strangler"), ("strangler-aiohttp", "before (aiohttp client)")):
        s50, n50 = med(name, 50, "rps"), med("nginx-proxy", 50, "rps")
        share = 100 * s50 / n50 if s50 and n50 else None
        least = TARGETS["throughput_share"]
        rows.append(
            f"| {label}: req/s as % of nginx-proxy's, 50 conns | {_fmt(share, '.1f')}% "
            f"| >= {least:.0f}% | {verdict(None if share is None else share >= least)} |"
        )
        sp, dp = med(name, 1, "p50_us"), med("direct", 1, "p50_us")
        added = sp - dp if sp is not None and dp is not None else None
        rows.append(
            f"| {label}: added p50 over direct, 1 conn | {_fmt(added)} µs | <= {TARGETS['added_p50_us']:.0f} µs "
            f"| {verdict(None if added is None else added <= TARGETS['added_p50_us'])} |"
        )
        for conns in CONNECTIONS:
            cpu = med(name, conns, "proxy_cpu_us")
            rows.append(
                f"| {label}: CPU per proxied request, {plural(conns)} | {_fmt(cpu)} µs "
                f"| <= {TARGETS['cpu_us']:.0f} µs | {verdict(None if cpu is None else cpu <= TARGETS['cpu_us'])} |"
            )
    for target in ("strangler", "strangler-aiohttp", "strangler-httpx", "nginx-proxy", "direct"):
        one, fifty = med(target, 1, "rps"), med(target, 50, "rps")
        ok = None if one is None or fifty is None else fifty >= one
        rows.append(
            f"| no collapse, {target}: req/s at 50 vs at 1 | {_fmt(fifty)} vs {_fmt(one)} | 50 >= 1 | {verdict(ok)} |"
        )
    for other in ("strangler-aiohttp", "strangler-httpx"):
        for conns in CONNECTIONS:
            a, h = med("strangler", conns, "rps"), med(other, conns, "rps")
            ca, ch = med("strangler", conns, "proxy_cpu_us"), med(other, conns, "proxy_cpu_us")
            ratio = a / h if a and h else None
            cpu_ratio = ca / ch if ca and ch else None
            rows.append(
                f"| strangler / {other}, {plural(conns)}: req/s {_fmt(a)} / {_fmt(h)} = {_fmt(ratio, '.2f')}x, "
                f"CPU per request {_fmt(ca)} / {_fmt(ch)} = {_fmt(cpu_ratio, '.2f')}x | | (comparison) | - |"
            )
    return "\n".join(rows)


def rounds_table(measurements: list[Measurement]) -> str:
    """Ratios within each round (the cells of one round ran minutes apart at most), and their medians."""
    by = {(m.target, m.connections): m for m in measurements}

    def cell(target: str, conns: int, i: int, attr: str) -> float | None:
        m = by.get((target, conns))
        return getattr(m.runs[i], attr) if m is not None and i < len(m.runs) else None

    def ratio(a: float | None, b: float | None, scale: float = 1.0) -> float | None:
        return scale * a / b if a and b else None

    rows = [
        "| round | strangler req/s as % of nginx-proxy's, 50 conns | strangler / before: req/s, 1 conn "
        "| 50 conns | strangler / before: CPU per request, 1 conn | 50 conns | others' CPU, cores |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    columns: list[list[float | None]] = [[] for _ in range(5)]
    for i in range(max((len(m.runs) for m in measurements), default=0)):
        values = [
            ratio(cell("strangler", 50, i, "rps"), cell("nginx-proxy", 50, i, "rps"), 100.0),
            ratio(cell("strangler", 1, i, "rps"), cell("strangler-aiohttp", 1, i, "rps")),
            ratio(cell("strangler", 50, i, "rps"), cell("strangler-aiohttp", 50, i, "rps")),
            ratio(cell("strangler", 1, i, "proxy_cpu_us"), cell("strangler-aiohttp", 1, i, "proxy_cpu_us")),
            ratio(cell("strangler", 50, i, "proxy_cpu_us"), cell("strangler-aiohttp", 50, i, "proxy_cpu_us")),
        ]
        others = [r.others_cores for m in measurements if i < len(m.runs) for r in [m.runs[i]]]
        for column, value in zip(columns, values, strict=True):
            column.append(value)
        rows.append(
            f"| {i + 1} | {_fmt(values[0], '.1f')}% | {_fmt(values[1], '.2f')} | {_fmt(values[2], '.2f')} "
            f"| {_fmt(values[3], '.2f')} | {_fmt(values[4], '.2f')} "
            f"| {_fmt(statistics.median(others) if others else None, '.2f')} |"
        )
    medians = [statistics.median(known) if (known := [v for v in c if v is not None]) else None for c in columns]
    rows.append(
        f"| median | {_fmt(medians[0], '.1f')}% | {_fmt(medians[1], '.2f')} | {_fmt(medians[2], '.2f')} "
        f"| {_fmt(medians[3], '.2f')} | {_fmt(medians[4], '.2f')} | |"
    )
    return "\n".join(rows)


def breakdown_table(measurements: list[Measurement]) -> str:
    """Proxy CPU per request split by layer, from the floors: each row is the difference to the one above."""
    by = {(m.target, m.connections): m.median("proxy_cpu_us") for m in measurements}
    layers = [
        ("uvicorn receiving and answering (floor-uvicorn)", "floor-uvicorn", None),
        ("+ forwarding with strangler's upstream client, nothing else (floor-passthrough - floor-uvicorn)",
         "floor-passthrough", "floor-uvicorn"),
        ("+ strangler's gateway logic (strangler - floor-passthrough)", "strangler", "floor-passthrough"),
        ("= strangler serve", "strangler", None),
        ("the aiohttp client instead (strangler-aiohttp - strangler)", "strangler-aiohttp", "strangler"),
    ]
    rows = ["| CPU µs per request | " + " | ".join(f"{c} conn{'s' if c > 1 else ''}" for c in CONNECTIONS) + " |",
            "|---|" + "---:|" * len(CONNECTIONS)]
    for label, target, minus in layers:
        cells = []
        for conns in CONNECTIONS:
            value, base = by.get((target, conns)), by.get((minus, conns)) if minus else 0.0
            cells.append(_fmt(value - base if value is not None and base is not None else None, "+.0f"
                              if label.startswith("the aiohttp") else ".0f"))
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def results_section(
    info: dict[str, str], measurements: list[Measurement], labels: dict[str, str], args: argparse.Namespace,
    profile: str | None,
) -> str:
    machine_lines = "\n".join(f"- {k}: {v}" for k, v in info.items())
    parts = [
        SECTION_START,
        "## Proxy benchmark (`bench/proxy.py`)",
        "",
        f"Run `python bench/proxy.py`: every configuration running at once, measured in {args.repeats} interleaved "
        f"rounds (in each, every cell once for {args.duration:g} s with wrk, the order rotating from round to "
        f"round; a {args.warmup:g} s warm-up of each cell before the first); the tables give medians over the "
        f"rounds. Static upstream: nginx, 1 worker, a 100-byte JSON body on "
        f"`{PATH}`. Everything (wrk, the proxy under test, the upstream) shares the same CPUs on loopback: "
        "the proxy competes with wrk and the upstream for the cores, so absolute numbers are low and the "
        "ratios are what to read.",
        "",
        machine_lines,
        "",
        results_table(measurements, labels),
        "",
        "### Round by round",
        "",
        rounds_table(measurements),
        "",
        "CPU µs/req is utime+stime from /proc for every process of the proxy (supervisor and workers), "
        "of the upstream nginx (master and worker), and of wrk, divided by the requests wrk completed. "
        "The floors and the aiohttp and httpx variants run in `serve_forked` (what `strangler serve` does for its "
        "workers: shared socket, forked uvicorn workers with the same settings, multiprocess metrics). "
        "\"others' CPU\" is what processes outside the benchmark used during the runs (other work on the "
        "machine: the noise in these numbers); each round first waits (up to `--quiet-wait` s) for it to "
        "drop below 0.25 cores. The \"before\" row is the same worker with the aiohttp adapter the gateway "
        "used until its own client replaced it (`AiohttpUpstreamClient` in `bench/proxy.py`).",
        "",
        "### Where the proxy's CPU goes, by layer",
        "",
        breakdown_table(measurements),
        "",
        "### Targets",
        "",
        targets_table(measurements),
    ]
    if profile:
        parts += ["", "### Profile (py-spy, strangler workers at 50 connections)", "", "```", profile, "```"]
    parts.append(SECTION_END)
    return "\n".join(parts) + "\n"


def write_results(section: str, results: Path = RESULTS) -> None:
    text = results.read_text() if results.exists() else "# Benchmark results\n\n"
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        tail = rest.split(SECTION_END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    results.write_text(text)


# --- the run ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` cleans up
    try:
        yield started
    finally:
        for service in reversed(started):
            service.stop()
        signal.signal(signal.SIGTERM, previous)


def measure_rounds(
    targets: list[tuple[str, str, Service | None]], upstream: Service, args: argparse.Namespace
) -> list[Measurement]:
    """`args.repeats` rounds; in each, every configuration once at each connection count, the order rotating
    from round to round, so that a change in the machine's other load falls on all of them alike."""
    cells = {(name, conns): Measurement(name, conns) for name, _, _ in targets for conns in CONNECTIONS}
    ours = upstream.pids + [pid for _, _, proxy in targets if proxy is not None for pid in proxy.pids]
    for i in range(args.repeats):
        others = wait_for_quiet(ours, args.quiet_wait)
        print(f"round {i + 1} of {args.repeats} (other processes used {others:.2f} cores just before)", flush=True)
        shift = i % len(targets)
        for name, url, proxy in targets[shift:] + targets[:shift]:
            for conns in CONNECTIONS:
                if i == 0 and args.warmup > 0:
                    run_wrk(url, conns, args.warmup, proxy, upstream)
                run = run_wrk(url, conns, args.duration, proxy, upstream)
                cells[(name, conns)].runs.append(run)
                print(
                    f"  {name:18} c={conns:<3} {run.rps:9.0f} req/s  p50 {run.p50_us:7.0f} µs  "
                    f"p99 {run.p99_us:7.0f} µs  proxy CPU {_fmt(run.proxy_cpu_us):>5} µs/req  errors {run.errors}  "
                    f"others {run.others_cores:.2f} cores",
                    flush=True,
                )
    return list(cells.values())


def start_config(what: Forked | str, name: str, workdir: Path, upstream_port: int) -> tuple[Service, str]:
    port = free_port()
    if what == "nginx":
        service = start_nginx_proxy(workdir, port, upstream_port)
    elif what == "strangler":
        service = start_strangler(workdir, port, upstream_port)
    elif isinstance(what, Forked):
        service = start_forked(workdir, name, what, port, upstream_port)
    else:
        raise ValueError(f"unknown configuration {what!r}")
    return service, f"http://127.0.0.1:{port}{PATH}"


def check_client_in_use(service: Service, marker: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in service.log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{service.name}: the swapped upstream client is not the one in use:\n{service.log_tail()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of warm-up per cell, before the first round (default 2)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="rounds, each running every cell once; medians are reported (default 5)")
    parser.add_argument("--only", nargs="*", metavar="NAME", help=f"measure only these ({', '.join(CONFIGS)})")
    parser.add_argument("--client", action="append", default=[], metavar="MODULE:CLASS",
                        help="also measure strangler with this UpstreamClient class (repeatable); "
                        "'httptools-prototype' names PrototypeHttptoolsClient below")
    parser.add_argument("--quiet-wait", type=float, default=20.0, metavar="SECONDS",
                        help="before each round, wait up to SECONDS for other processes to go quiet (default 20)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--results", type=Path, default=RESULTS, metavar="FILE",
                        help="the results file whose section is rewritten (default bench/RESULTS.md)")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                        help="after measuring, py-spy the strangler workers for SECONDS at 50 connections")
    parser.add_argument("--serve", nargs=3, metavar=("CONFIG", "APP", "CLIENT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        return serve_forked(*args.serve)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install {tool})", file=sys.stderr)
            return 2
    configs = dict(CONFIGS)
    for spec in args.client:
        configs[f"strangler-{spec.rpartition(':')[2]}"] = (f"strangler, {spec} client (2 workers)", Forked(
            "strangler", spec))
    labels = {name: label for name, (label, _) in configs.items()}
    selected = args.only or list(configs)
    unknown = set(selected) - set(configs)
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(sorted(unknown))}; known: {', '.join(configs)}")
    info = machine()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    measurements: list[Measurement] = []
    profile: str | None = None
    workdir = Path(tempfile.mkdtemp(prefix="strangler-bench-"))
    try:
        with services() as started:
            upstream_port = free_port()
            upstream = start_nginx_upstream(workdir, upstream_port)
            started.append(upstream)
            direct_url = f"http://127.0.0.1:{upstream_port}{PATH}"
            wait_ready(upstream, direct_url)
            targets: list[tuple[str, str, Service | None]] = []
            strangler: tuple[Service, str] | None = None
            for name, (_, what) in configs.items():
                profiling = name == "strangler" and args.profile > 0
                if name not in selected and not profiling:
                    continue
                if what is None:
                    targets.append((name, direct_url, None))
                    continue
                proxy, url = start_config(what, name, workdir, upstream_port)
                started.append(proxy)
                wait_ready(proxy, url)
                if isinstance(what, Forked) and what.client in ("httpx", "aiohttp"):
                    check_client_in_use(proxy, CLIENT_MARKER.format(what.client))
                if name in selected:
                    targets.append((name, url, proxy))
                if name == "strangler":
                    strangler = (proxy, url)
            measurements = measure_rounds(targets, upstream, args)
            if args.profile > 0 and strangler is not None:
                profile = profile_workers(strangler[0], strangler[1], upstream, args.profile, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(results_table(measurements, labels))
    print()
    print(rounds_table(measurements))
    print()
    print(breakdown_table(measurements))
    print()
    print(targets_table(measurements))
    if profile:
        print()
        print(profile)
    if not args.no_write:
        write_results(results_section(info, measurements, labels, args, profile), args.results)
        print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

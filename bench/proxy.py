"""The proxy benchmark: Strangler against nginx on loopback, in front of one static nginx upstream.

Measured in one run, each with `wrk` at 1 and 50 connections, three times, medians reported:
direct to the upstream, nginx as a reverse proxy, `strangler serve` (aiohttp upstream client) and the
same gateway with an httpx upstream client (`HttpxUpstreamClient` below, served by an identical
forked-uvicorn launcher). CPU per request is read from /proc for the proxy's whole process tree.

    python bench/proxy.py                  # full run, prints a table, rewrites its section of bench/RESULTS.md
    python bench/proxy.py --duration 3 --repeats 1 --no-write      # quick look
    python bench/proxy.py --profile 10     # also py-spy the strangler workers under 50 connections
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
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


def _httpx_worker(config: Any, sock: socket.socket) -> None:
    import uvicorn
    from prometheus_client import CollectorRegistry

    from strangler.gateway.proxy import ProxyApp
    from strangler.gateway.server import uvicorn_config

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    clients = {name: HttpxUpstreamClient(name, up) for name, up in config.upstreams.items()}
    app = ProxyApp(config, registry=CollectorRegistry(), clients=clients)
    uvicorn.Server(uvicorn_config(app, config)).run(sockets=[sock])


def serve_httpx(config_path: str) -> int:
    """`strangler serve` without the admin listener, with httpx clients: same socket, fork, uvicorn settings."""
    from prometheus_client import values

    from strangler.config import load_config
    from strangler.gateway.server import bind_socket

    config = load_config(config_path)
    metrics_dir = tempfile.mkdtemp(prefix="strangler-bench-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # as `strangler serve` does: same metrics cost
    values.ValueClass = values.get_value_class()
    sock = bind_socket(config.listen)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_httpx_worker, args=(config, sock), daemon=True) for _ in range(config.workers)]
    try:
        for worker in workers:
            worker.start()
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        for worker in workers:
            worker.join(5)
            if worker.is_alive():
                worker.kill()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


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
    return start_service("strangler-aiohttp", [strangler, "--log-level", "WARNING", "serve", "-c", str(conf)], workdir)


def start_strangler_httpx(workdir: Path, port: int, upstream_port: int) -> Service:
    conf = strangler_config(workdir, "strangler-httpx", port, upstream_port)
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-httpx", str(conf)]
    return start_service("strangler-httpx", argv, workdir)


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
    proxy_before, upstream_before = cpu_seconds(proxy_pids), cpu_seconds(upstream_pids)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, check=False)
    proxy_after, upstream_after = cpu_seconds(proxy_pids), cpu_seconds(upstream_pids)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    rps, p50, p99, requests, errors = parse_wrk(done.stdout)
    per = 1_000_000 / max(requests, 1)
    wrk_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return WrkRun(
        rps=rps,
        p50_us=p50,
        p99_us=p99,
        requests=requests,
        errors=errors,
        proxy_cpu_us=(proxy_after - proxy_before) * per if proxy else None,
        upstream_cpu_us=(upstream_after - upstream_before) * per,
        wrk_cpu_us=wrk_cpu * per,
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


def profile_workers(service: Service, url: str, upstream: Service, seconds: float, workdir: Path) -> str:
    """py-spy the proxy's workers under 50 connections; return a summary of where their time goes."""
    spy = shutil.which("py-spy")
    if spy is None:
        return "py-spy is not installed (`pip install py-spy`); no profile taken."
    workers = [pid for pid in service.pids if pid != service.proc.pid]
    spies = []
    for pid in workers:
        out = workdir / f"profile-{pid}.txt"
        argv = [spy, "record", "-p", str(pid), "-d", f"{seconds:g}", "-r", "200", "-f", "raw", "-o", str(out), "-n"]
        spies.append((out, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    time.sleep(0.5)
    run_wrk(url, 50, seconds, service, upstream)
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
    return summarize_profile(stacks)


def _frame(frame: str) -> str:
    # py-spy raw frames: "function (path/to/module.py:line)"
    m = re.match(r"(.*?) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{func} ({path})"


def summarize_profile(stacks: Counter[str]) -> str:
    total = sum(stacks.values())
    if not total:
        return "py-spy recorded no samples."
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for stack, count in stacks.items():
        frames = [_frame(f) for f in stack.split(";") if f]
        if frames:
            own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    lines = [f"{total} samples over the workers (idle included as `native`/epoll frames where py-spy sees them)", ""]
    lines.append("self time, top 25:")
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in own.most_common(25)]
    lines.append("")
    lines.append("inclusive time, top 40:")
    lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in inclusive.most_common(40)]
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

    import aiohttp
    import uvicorn

    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%a %b %d %H:%M:%S UTC %Y"),
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nginx": version(["nginx", "-v"]),
        "wrk": version(["wrk", "-v"]).split(" Copyright")[0],
        "libraries": f"aiohttp {aiohttp.__version__}, httpx {httpx.__version__}, uvicorn {uvicorn.__version__}",
    }


LABELS = {
    "direct": "direct to nginx upstream",
    "nginx-proxy": "nginx reverse proxy (2 workers)",
    "strangler-aiohttp": "strangler serve (2 workers, aiohttp)",
    "strangler-httpx": "strangler ProxyApp, httpx client (2 workers)",
}


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def results_table(measurements: list[Measurement]) -> str:
    rows = [
        "| configuration | conns | req/s | p50 µs | p99 µs | proxy CPU µs/req | upstream CPU µs/req | wrk CPU µs/req "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in measurements:
        errors = sum(r.errors for r in m.runs)
        rows.append(
            f"| {LABELS.get(m.target, m.target)} | {m.connections} | {_fmt(m.median('rps'))} "
            f"| {_fmt(m.median('p50_us'))} | {_fmt(m.median('p99_us'))} | {_fmt(m.median('proxy_cpu_us'))} "
            f"| {_fmt(m.median('upstream_cpu_us'))} | {_fmt(m.median('wrk_cpu_us'))} | {errors} |"
        )
    return "\n".join(rows)


def targets_table(measurements: list[Measurement]) -> str:
    by = {(m.target, m.connections): m for m in measurements}

    def med(target: str, conns: int, attr: str) -> float | None:
        m = by.get((target, conns))
        return m.median(attr) if m else None

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**missed**")

    rows = ["| measure | value | target | verdict |", "|---|---:|---:|---|"]
    s50, n50 = med("strangler-aiohttp", 50, "rps"), med("nginx-proxy", 50, "rps")
    share = 100 * s50 / n50 if s50 and n50 else None
    rows.append(
        f"| strangler req/s as % of nginx-proxy's, 50 conns | {_fmt(share, '.1f')}% "
        f"| >= {TARGETS['throughput_share']:.0f}% | {verdict(None if share is None else share >= 20)} |"
    )
    sp, dp = med("strangler-aiohttp", 1, "p50_us"), med("direct", 1, "p50_us")
    added = sp - dp if sp is not None and dp is not None else None
    rows.append(
        f"| added p50 over direct, 1 conn | {_fmt(added)} µs | <= {TARGETS['added_p50_us']:.0f} µs "
        f"| {verdict(None if added is None else added <= TARGETS['added_p50_us'])} |"
    )
    for conns in CONNECTIONS:
        cpu = med("strangler-aiohttp", conns, "proxy_cpu_us")
        rows.append(
            f"| strangler CPU per proxied request, {conns} conn{'s' if conns > 1 else ''} | {_fmt(cpu)} µs "
            f"| <= {TARGETS['cpu_us']:.0f} µs | {verdict(None if cpu is None else cpu <= TARGETS['cpu_us'])} |"
        )
    for target in ("strangler-aiohttp", "strangler-httpx", "nginx-proxy", "direct"):
        one, fifty = med(target, 1, "rps"), med(target, 50, "rps")
        ok = None if one is None or fifty is None else fifty >= one
        rows.append(
            f"| no collapse, {target}: req/s at 50 vs at 1 | {_fmt(fifty)} vs {_fmt(one)} | 50 >= 1 | {verdict(ok)} |"
        )
    for conns in CONNECTIONS:
        a, h = med("strangler-aiohttp", conns, "rps"), med("strangler-httpx", conns, "rps")
        ratio = a / h if a and h else None
        rows.append(
            f"| aiohttp / httpx upstream client req/s, {conns} conn{'s' if conns > 1 else ''} "
            f"| {_fmt(a)} / {_fmt(h)} = {_fmt(ratio, '.2f')}x | (comparison) | - |"
        )
    return "\n".join(rows)


def results_section(info: dict[str, str], measurements: list[Measurement], args: argparse.Namespace,
                    profile: str | None) -> str:
    machine_lines = "\n".join(f"- {k}: {v}" for k, v in info.items())
    parts = [
        SECTION_START,
        "## Proxy benchmark (`bench/proxy.py`)",
        "",
        f"Run `python bench/proxy.py` (wrk {args.duration:g} s per run, {args.repeats} runs per cell, medians; "
        "a 2 s warm-up before each cell). Static upstream: nginx, 1 worker, a 100-byte JSON body on "
        f"`{PATH}`. Everything (wrk, the proxy under test, the upstream) shares the same CPUs on loopback: "
        "the proxy competes with wrk and the upstream for the cores, so absolute numbers are low and the "
        "ratios are what to read.",
        "",
        machine_lines,
        "",
        results_table(measurements),
        "",
        "CPU µs/req is utime+stime from /proc for every process of the proxy (supervisor and workers), "
        "of the upstream nginx (master and worker), and of wrk, divided by the requests wrk completed.",
        "",
        "### Targets",
        "",
        targets_table(measurements),
    ]
    if args.notes and Path(args.notes).exists():
        parts += ["", Path(args.notes).read_text().strip()]
    if profile:
        parts += ["", "### Profile (py-spy, strangler workers at 50 connections)", "", "```", profile, "```"]
    parts.append(SECTION_END)
    return "\n".join(parts) + "\n"


def write_results(section: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        tail = rest.split(SECTION_END, 1)[1].lstrip("\n")
        text = head + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


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


def measure(name: str, url: str, proxy: Service | None, upstream: Service, args: argparse.Namespace) -> list[
    Measurement
]:
    out = []
    for conns in CONNECTIONS:
        run_wrk(url, conns, args.warmup, proxy, upstream)
        m = Measurement(name, conns)
        for i in range(args.repeats):
            run = run_wrk(url, conns, args.duration, proxy, upstream)
            m.runs.append(run)
            print(
                f"  {name:18} c={conns:<3} run {i + 1}: {run.rps:9.0f} req/s  p50 {run.p50_us:7.0f} µs  "
                f"p99 {run.p99_us:7.0f} µs  proxy CPU {_fmt(run.proxy_cpu_us):>5} µs/req  errors {run.errors}",
                flush=True,
            )
        out.append(m)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per cell (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell; the median is reported (default 3)")
    parser.add_argument("--only", nargs="*", choices=list(LABELS), help="measure only these configurations")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                        help="after measuring, py-spy the strangler workers for SECONDS at 50 connections")
    parser.add_argument("--notes", help="a Markdown file appended to the section (analysis written by hand)")
    parser.add_argument("--serve-httpx", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_httpx:
        return serve_httpx(args.serve_httpx)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"error: {tool} is not installed (apt-get install {tool})", file=sys.stderr)
            return 2
    selected = args.only or list(LABELS)
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
            if "direct" in selected:
                measurements += measure("direct", direct_url, None, upstream, args)
            starters = {
                "nginx-proxy": start_nginx_proxy,
                "strangler-aiohttp": start_strangler,
                "strangler-httpx": start_strangler_httpx,
            }
            for name, start in starters.items():
                if name not in selected and not (name == "strangler-aiohttp" and args.profile):
                    continue
                port = free_port()
                proxy = start(workdir, port, upstream_port)
                started.append(proxy)
                url = f"http://127.0.0.1:{port}{PATH}"
                wait_ready(proxy, url)
                if name in selected:
                    measurements += measure(name, url, proxy, upstream, args)
                if name == "strangler-aiohttp" and args.profile:
                    profile = profile_workers(proxy, url, upstream, args.profile, workdir)
                proxy.stop()
                started.remove(proxy)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(results_table(measurements))
    print()
    print(targets_table(measurements))
    if profile:
        print()
        print(profile)
    if not args.no_write:
        write_results(results_section(info, measurements, args, profile))
        print(f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

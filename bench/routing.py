"""The routing benchmark: the cost of one routing decision, and proxy throughput with the flag machinery on.

1. Decision: 200 capabilities of 10 route templates each (literal, parameter and `{rest:path}` templates under
   shared prefixes, every mode, sticky keys from path, header and cookie), flags from the real `FlagCache`.
   Each request is timed alone around `Router.route` with the key closure the proxy builds, for requests
   that hit a template and requests that miss them all; p50 and p99 in microseconds.
2. Throughput (wrk, 50 connections): `strangler serve` with a SQLite store and the same 200 capabilities,
   against the same worker with `StaticFlags` and no refresher (the flag machinery off), and against
   `bench/proxy.py`'s strangler configuration (one capability), all in front of one nginx, in interleaved
   rounds so that the machine's other load falls on each alike; medians.

3. Overlap check at start-up: the 2,000 templates of part 1 checked for overlaps across capabilities by
   comparing every pair (the check before `OverlapIndex`, kept here as the baseline) and through
   `OverlapIndex`, alternating in rounds; medians of wall and CPU time, the other processes' load beside them.

    python bench/routing.py                       # all parts; rewrites its section of bench/RESULTS.md
    python bench/routing.py --decision-only --no-write
    python bench/routing.py --overlap-only        # part 3 only; rewrites only its part of the section
    python bench/routing.py --duration 3 --rounds 1 --no-write     # a quick look
"""

from __future__ import annotations

import argparse
import datetime
import gc
import multiprocessing
import os
import random
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import proxy as proxy_bench  # noqa: E402  (bench/proxy.py: processes, nginx, wrk, machine description)

from strangler.config import StranglerConfig  # noqa: E402
from strangler.routing.refresh import FlagCache  # noqa: E402
from strangler.routing.router import Router, initial_flags  # noqa: E402
from strangler.routing.routes import OverlapIndex, RouteTemplate, parse_route, templates_overlap  # noqa: E402
from strangler.routing.sticky import request_key  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION_START = "<!-- bench/routing.py: start -->"
SECTION_END = "<!-- bench/routing.py: end -->"
OVERLAP_START = "<!-- bench/routing.py overlap: start -->"
OVERLAP_END = "<!-- bench/routing.py overlap: end -->"
CAPABILITIES = 200
MODES = ["legacy", "shadow", "canary", "new", "new-only"]
STICKY = ["path:id", "header:x-user", "cookie:uid"]
HIT_PATH = "/api/v1/res2/42"  # capability res2: canary, sticky path:id -> a bucket is computed per request
TARGETS = {"decision_p50_us": 20.0, "throughput_ratio": 0.95}


# --- the configuration ----------------------------------------------------------------------------------------


def routes_of(i: int) -> list[str]:
    """Ten templates of capability i: literals, parameters and a tail, under prefixes all capabilities share."""
    base = f"/api/v1/res{i}"
    return [
        f"GET {base}",
        f"POST {base}",
        f"GET {base}/search",
        f"GET {base}/{{id}}",
        f"PUT {base}/{{id}}",
        f"DELETE {base}/{{id}}",
        f"GET {base}/{{id}}/items",
        f"GET {base}/{{id}}/items/{{item}}",
        f"POST {base}/{{id}}/actions/{{action}}",
        f"* /api/v2/res{i}/{{rest:path}}",
    ]


def config_document(legacy_url: str, new_url: str, *, store: str, listen: str = "127.0.0.1:0",
                    admin: str = "127.0.0.1:0") -> dict[str, Any]:
    capabilities = {}
    for i in range(CAPABILITIES):
        mode = MODES[i % len(MODES)]
        capabilities[f"res{i}"] = {
            "legacy": "legacy",
            "new": "new",
            "routes": routes_of(i),
            "mode": mode,
            "percent": 25.0 if mode == "canary" else 0.0,
            "sticky": STICKY[i % len(STICKY)],
            # mirroring is the shadow benchmark's subject: here the decision is made, nothing is mirrored
            "shadow": {"sample": 0.0},
        }
    return {
        "listen": listen,
        "workers": 2,
        "admin": {"listen": admin},
        "store": store,
        "flags": {"refresh_interval": 1.0},
        "limits": {"drain_timeout": 1},
        "upstreams": {"legacy": {"url": legacy_url}, "new": {"url": new_url}},
        "default_upstream": "legacy",
        "capabilities": capabilities,
    }


# --- part 1: the decision -------------------------------------------------------------------------------------

Request = tuple[str, str, list[tuple[bytes, bytes]], bytes]


def requests(n: int, rng: random.Random) -> tuple[list[Request], list[Request]]:
    """`n` requests that hit a template and `n // 4` that miss every one."""
    headers = [(b"host", b"gateway"), (b"user-agent", b"bench"), (b"accept", b"application/json"),
               (b"x-user", b"u-1234"), (b"cookie", b"theme=dark; uid=u-1234; prefs={\"a\":1}")]
    hits: list[Request] = []
    for _ in range(n):
        i = rng.randrange(CAPABILITIES)
        base, key = f"/api/v1/res{i}", str(rng.randrange(1_000_000))
        method, path = rng.choice([
            ("GET", base), ("POST", base), ("GET", f"{base}/search"), ("GET", f"{base}/{key}"),
            ("PUT", f"{base}/{key}"), ("DELETE", f"{base}/{key}"), ("GET", f"{base}/{key}/items"),
            ("GET", f"{base}/{key}/items/7"), ("POST", f"{base}/{key}/actions/close"),
            ("GET", f"/api/v2/res{i}/reports/2024/q{rng.randrange(1, 5)}"),
        ])
        hits.append((method, path, headers, b"page=2"))
    misses: list[Request] = []
    for _ in range(n // 4):
        i = rng.randrange(CAPABILITIES)
        method, path = rng.choice([
            ("GET", f"/api/v1/unknown{i}/1"),  # walks /api/v1 then fails
            ("PATCH", f"/api/v1/res{i}/5"),  # the path matches, the method does not
            ("GET", f"/api/v1/res{i}/5/items/7/extra"),  # deeper than any template
            ("GET", f"/static/app-{i}.js"),
            ("GET", "/"),
        ])
        misses.append((method, path, headers, b""))
    return hits, misses


def time_routes(router: Router, batch: list[Request]) -> list[float]:
    """Microseconds per request: `Router.route` with the key closure, as `ProxyApp._http` calls it."""
    clock = time.perf_counter_ns
    out = []
    for method, path, headers, query in batch:
        start = clock()
        # the closure is called (if at all) before the loop moves on, as in ProxyApp._http
        router.route(method, path, lambda spec, params: request_key(spec, params, headers, query))  # noqa: B023
        out.append((clock() - start) / 1000)
    return out


def timer_overhead(n: int) -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(n):
        start = clock()
        samples.append(clock() - start)
    return statistics.median(samples) / 1000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class DecisionResult:
    rounds: list[dict[str, float]] = field(default_factory=list)
    build_ms: float = 0.0
    timer_us: float = 0.0

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.rounds)


def measure_decisions(rounds: int, per_round: int) -> DecisionResult:
    started = time.perf_counter()
    config = StranglerConfig.model_validate(config_document("http://127.0.0.1:1", "http://127.0.0.1:2",
                                                            store="sqlite://"))
    router = Router(config.capabilities, FlagCache(initial_flags(config.capabilities)), config.default_upstream)
    result = DecisionResult(build_ms=(time.perf_counter() - started) * 1000)
    hits, misses = requests(per_round, random.Random(42))
    everything = hits + misses
    random.Random(7).shuffle(everything)
    # every request is routed where expected (a benchmark of wrong answers would be worthless)
    assert all(router.route(m, p).capability is not None for m, p, _, _ in hits)
    assert all(router.route(m, p).capability is None for m, p, _, _ in misses)
    time_routes(router, everything)  # warm-up
    result.timer_us = timer_overhead(100_000)
    gc.disable()  # a collection inside one timed call is not a cost of routing
    try:
        for n in range(rounds):
            gc.collect()
            hit_us = time_routes(router, hits)
            miss_us = time_routes(router, misses)
            mixed = hit_us + miss_us
            row = {
                "p50": percentile(mixed, 0.50), "p99": percentile(mixed, 0.99),
                "hit_p50": percentile(hit_us, 0.50), "hit_p99": percentile(hit_us, 0.99),
                "miss_p50": percentile(miss_us, 0.50), "miss_p99": percentile(miss_us, 0.99),
                "mean": statistics.fmean(mixed),
            }
            result.rounds.append(row)
            print(f"  decision round {n + 1}: p50 {row['p50']:.2f} µs  p99 {row['p99']:.2f} µs  "
                  f"(hits {row['hit_p50']:.2f}/{row['hit_p99']:.2f}, misses {row['miss_p50']:.2f}/"
                  f"{row['miss_p99']:.2f})", flush=True)
    finally:
        gc.enable()
    return result


# --- part 3: the overlap check at start-up ---------------------------------------------------------------


def pairwise_overlap_check(routes: list[tuple[str, int, RouteTemplate]]) -> tuple[str, int] | None:
    """The check as it was: every template against every earlier one of another capability."""
    seen: list[tuple[str, int, RouteTemplate]] = []
    for cap, i, template in routes:
        for other_cap, _, other in seen:
            if other_cap != cap and templates_overlap(template, other):
                return cap, i
        seen.append((cap, i, template))
    return None


def indexed_overlap_check(routes: list[tuple[str, int, RouteTemplate]]) -> tuple[str, int] | None:
    index = OverlapIndex()
    for cap, i, template in routes:
        if index.first_overlap(cap, template) is not None:
            return cap, i
        index.add(cap, i, template)
    return None


@dataclass
class OverlapResult:
    routes: int = 0
    rounds: list[dict[str, float]] = field(default_factory=list)
    validate_ms: list[float] = field(default_factory=list)  # the whole configuration validated, index in use

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.rounds)


def _timed(check: Callable[[list[tuple[str, int, RouteTemplate]]], tuple[str, int] | None],
           routes: list[tuple[str, int, RouteTemplate]]) -> tuple[float, float, float]:
    """(wall ms, our CPU ms, other processes' cores) of one run of `check`, which must find no overlap."""
    busy0, cpu0, t0 = proxy_bench.machine_cpu_seconds()[0], time.process_time(), time.perf_counter()
    found = check(routes)
    busy1, cpu1, t1 = proxy_bench.machine_cpu_seconds()[0], time.process_time(), time.perf_counter()
    if found is not None:
        raise RuntimeError(f"the benchmark's routes overlap at {found}")
    wall = t1 - t0
    return wall * 1000, (cpu1 - cpu0) * 1000, max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / wall if wall else 0.0


def measure_overlap_check(rounds: int) -> OverlapResult:
    document = config_document("http://127.0.0.1:1", "http://127.0.0.1:2", store="sqlite://")
    routes = [(name, i, parse_route(text)) for name, cap in document["capabilities"].items()
              for i, text in enumerate(cap["routes"])]
    result = OverlapResult(routes=len(routes))
    for n in range(rounds):
        first, second = (pairwise_overlap_check, indexed_overlap_check) if n % 2 == 0 else (
            indexed_overlap_check, pairwise_overlap_check)
        timings = {check.__name__: _timed(check, routes) for check in (first, second)}
        before, after = timings["pairwise_overlap_check"], timings["indexed_overlap_check"]
        row = {"before_ms": before[0], "before_cpu_ms": before[1], "before_others": before[2],
               "after_ms": after[0], "after_cpu_ms": after[1], "after_others": after[2]}
        started = time.perf_counter()
        StranglerConfig.model_validate(document)
        result.validate_ms.append((time.perf_counter() - started) * 1000)
        result.rounds.append(row)
        print(f"  overlap round {n + 1}: pairwise {row['before_ms']:.0f} ms (CPU {row['before_cpu_ms']:.0f}, "
              f"others {row['before_others']:.2f} cores), indexed {row['after_ms']:.1f} ms (CPU "
              f"{row['after_cpu_ms']:.1f}, others {row['after_others']:.2f} cores), whole configuration "
              f"{result.validate_ms[-1]:.0f} ms", flush=True)
    return result


def overlap_report(result: OverlapResult, info: dict[str, str]) -> str:
    r = result
    ratio = statistics.median(row["before_ms"] / row["after_ms"] for row in r.rounds)
    others = [row[k] for row in r.rounds for k in ("before_others", "after_others")]
    lines = [
        OVERLAP_START,
        "### Overlap check at start-up",
        "",
        f"{info.get('date', datetime.date.today().isoformat())}; {info.get('cpus (nproc)')} cpus "
        f"({info.get('cpu')}), python speed: {info.get('python speed')}. The {r.routes:,} templates above "
        "checked for overlaps across capabilities (none overlap, so every template is checked against all before "
        "it): `pairwise`, every template compared with every earlier one (the check before `OverlapIndex`), "
        "against `indexed`, `OverlapIndex` (a segment trie walked only along the branches a request could share "
        f"with the new template), alternating which goes first, {len(r.rounds)} rounds, medians. Other processes "
        f"used {min(others):.2f} to {max(others):.2f} of the cores meanwhile.",
        "",
        "| check | wall ms | CPU ms |",
        "|---|---:|---:|",
        f"| pairwise (before) | {r.median('before_ms'):.0f} | {r.median('before_cpu_ms'):.0f} |",
        f"| indexed (after) | {r.median('after_ms'):.1f} | {r.median('after_cpu_ms'):.1f} |",
        "",
        "Per round, wall ms (pairwise / indexed): " + "; ".join(
            f"{row['before_ms']:.0f} / {row['after_ms']:.1f}" for row in r.rounds) + ".",
        "",
        f"Median of the per-round ratios: {ratio:.0f}x faster. Validating the whole configuration (pydantic, "
        f"cross-references, the indexed overlap check): median {statistics.median(r.validate_ms):.0f} ms.",
        OVERLAP_END,
    ]
    return "\n".join(lines) + "\n"


def write_overlap_results(part: str) -> None:
    """Replace only the overlap part of this benchmark's section (or add it at the section's end)."""
    text = RESULTS.read_text()
    if OVERLAP_START in text and OVERLAP_END in text:
        head, rest = text.split(OVERLAP_START, 1)
        text = head + part.rstrip("\n") + rest.split(OVERLAP_END, 1)[1]
    elif SECTION_END in text:
        head, rest = text.split(SECTION_END, 1)
        text = head.rstrip("\n") + "\n\n" + part + SECTION_END + rest
    else:
        raise SystemExit(f"no section {SECTION_START} in {RESULTS}: run the whole benchmark first")
    RESULTS.write_text(text)


# --- part 2: throughput ---------------------------------------------------------------------------------------


def _static_worker(config: Any, sock: socket.socket) -> None:
    """`strangler serve`'s worker with the flag machinery taken out: StaticFlags, no refresher."""
    import uvicorn
    from prometheus_client import CollectorRegistry

    from strangler.app import build_proxy
    from strangler.gateway.server import uvicorn_config
    from strangler.routing.refresh import FlagRefresher
    from strangler.routing.router import StaticFlags

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    app = build_proxy(config, CollectorRegistry())
    app.router.flags = StaticFlags(config.capabilities)
    app.lifecycle = [part for part in app.lifecycle if not isinstance(part, FlagRefresher)]
    uvicorn.Server(uvicorn_config(app, config)).run(sockets=[sock])


def serve_static(config_path: str) -> int:
    """Forked workers as `strangler serve` forks them (same socket, uvicorn settings, metrics mode), no admin."""
    from prometheus_client import values

    from strangler.config import load_config
    from strangler.gateway.server import bind_socket

    config = load_config(config_path)
    metrics_dir = tempfile.mkdtemp(prefix="strangler-bench-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    values.ValueClass = values.get_value_class()
    sock = bind_socket(config.listen)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_static_worker, args=(config, sock), daemon=True)
               for _ in range(config.workers)]
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
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def start_upstream(workdir: Path, port: int) -> proxy_bench.Service:
    """nginx answering the benchmark's static body on every path (the capabilities' and `/static`)."""
    conf = proxy_bench.nginx_config(
        workdir, "upstream", "worker_processes 1;",
        f"""server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type application/json; return 200 '{proxy_bench.BODY}'; }}
}}""",
    )
    argv = ["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"]
    return proxy_bench.start_service("nginx-upstream", argv, workdir)


def write_config(workdir: Path, name: str, upstream_port: int) -> tuple[Path, int]:
    port = proxy_bench.free_port()
    url = f"http://127.0.0.1:{upstream_port}"
    document = config_document(url, url, store=f"sqlite:///{workdir / name}.db", listen=f"127.0.0.1:{port}",
                               admin=f"127.0.0.1:{proxy_bench.free_port()}")
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path, port


Starter = Callable[[Path, int], tuple[proxy_bench.Service, str]]


def starters() -> dict[str, Starter]:
    def flags_on(workdir: Path, upstream_port: int) -> tuple[proxy_bench.Service, str]:
        path, port = write_config(workdir, "flags-on", upstream_port)
        strangler = shutil.which("strangler") or "strangler"
        argv = [strangler, "--log-level", "WARNING", "serve", "-c", str(path)]
        return proxy_bench.start_service("flags-on", argv, workdir), f"http://127.0.0.1:{port}{HIT_PATH}"

    def flags_off(workdir: Path, upstream_port: int) -> tuple[proxy_bench.Service, str]:
        path, port = write_config(workdir, "flags-off", upstream_port)
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve-static", str(path)]
        return proxy_bench.start_service("flags-off", argv, workdir), f"http://127.0.0.1:{port}{HIT_PATH}"

    def foundation(workdir: Path, upstream_port: int) -> tuple[proxy_bench.Service, str]:
        port = proxy_bench.free_port()
        service = proxy_bench.start_strangler(workdir, port, upstream_port)
        return service, f"http://127.0.0.1:{port}{proxy_bench.PATH}"

    return {"flags-on": flags_on, "flags-off": flags_off, "proxy.py strangler": foundation}


@dataclass
class Cell:
    name: str
    runs: list[Any] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)


def measure_throughput(args: argparse.Namespace) -> list[Cell]:
    cells = {name: Cell(name) for name in starters()}
    workdir = Path(tempfile.mkdtemp(prefix="strangler-bench-routing-"))
    try:
        with proxy_bench.services() as started:
            upstream_port = proxy_bench.free_port()
            upstream = start_upstream(workdir, upstream_port)
            started.append(upstream)
            proxy_bench.wait_ready(upstream, f"http://127.0.0.1:{upstream_port}{HIT_PATH}")
            running: dict[str, tuple[proxy_bench.Service, str]] = {}
            for name, start in starters().items():
                running[name] = start(workdir, upstream_port)
                started.append(running[name][0])
            for service, url in running.values():
                # validating 2,000 routes for overlaps takes seconds on a slow or busy machine
                proxy_bench.wait_ready(service, url, timeout=180.0)
            for service, url in running.values():  # warm-up: imports, pools, the first refreshes
                proxy_bench.run_wrk(url, args.connections, args.warmup, service, upstream)
            ours = [pid for service in started for pid in service.pids]
            for n in range(args.rounds):
                others = proxy_bench.wait_for_quiet(ours, args.quiet_wait)
                print(f"  round {n + 1}: other processes use {others:.2f} cores", flush=True)
                order = list(running) if n % 2 == 0 else list(reversed(running))  # no cell always first
                for name in order:
                    service, url = running[name]
                    run = proxy_bench.run_wrk(url, args.connections, args.duration, service, upstream)
                    cells[name].runs.append(run)
                    print(f"  round {n + 1} {name:19} {run.rps:8.0f} req/s  p50 {run.p50_us:6.0f} µs  "
                          f"p99 {run.p99_us:7.0f} µs  proxy CPU {run.proxy_cpu_us:5.0f} µs/req  "
                          f"others {run.others_cores:.2f} cores  errors {run.errors}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return list(cells.values())


# --- the report -----------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def report(info: dict[str, str], args: argparse.Namespace, decisions: DecisionResult | None,
           cells: list[Cell] | None, overlaps: OverlapResult | None = None) -> str:
    today = datetime.date.today().isoformat()
    lines = [SECTION_START, "## Routing decision and flag machinery", "",
             f"`python bench/routing.py` on {today}; machine:", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    if decisions is not None:
        d = decisions
        lines += [
            "", "### Decision cost: match + flag + decision, per request",
            "",
            f"{CAPABILITIES} capabilities x 10 templates (literal, `{{param}}` and `{{rest:path}}`, under shared "
            "`/api/v1`, `/api/v2` prefixes), modes cycling through all five, sticky keys from path, header and "
            "cookie, flags from the real `FlagCache`. Each request timed alone (`perf_counter_ns`) around "
            "`Router.route` with the key closure the proxy builds; "
            f"{args.per_round:,} hits and {args.per_round // 4:,} misses per round, {args.decision_rounds} "
            f"rounds, medians of the rounds. Timer overhead ({d.timer_us:.2f} µs per reading) is included. "
            f"Building the router (configuration validation, overlap checks, trie): {d.build_ms:.0f} ms, once.",
            "",
            "| requests | p50 µs | p99 µs |",
            "|---|---:|---:|",
            f"| all (hits and misses) | {d.median('p50'):.2f} | {d.median('p99'):.2f} |",
            f"| hits | {d.median('hit_p50'):.2f} | {d.median('hit_p99'):.2f} |",
            f"| misses (to the default upstream) | {d.median('miss_p50'):.2f} | {d.median('miss_p99'):.2f} |",
            "",
            "Per round, p50 / p99 (µs): " + "; ".join(f"{r['p50']:.2f} / {r['p99']:.2f}" for r in d.rounds) + ".",
            "",
            f"Target p50 <= {TARGETS['decision_p50_us']:.0f} µs: "
            f"{verdict(d.median('p50') <= TARGETS['decision_p50_us'])}.",
        ]
    if cells is not None:
        by = {c.name: c for c in cells}
        on, off, base = by["flags-on"], by["flags-off"], by["proxy.py strangler"]
        ratio = on.median("rps") / off.median("rps")
        lines += [
            "", "### Proxy throughput with the flag machinery on",
            "",
            f"wrk `-c{args.connections}`, {args.rounds} interleaved rounds of {args.duration:g} s (after a "
            f"{args.warmup:g} s warm-up of each), medians; one nginx upstream (1 worker) answering every path. "
            "`flags-on`: `strangler serve`, 2 workers, SQLite store, the 200 capabilities above, the request "
            f"`GET {HIT_PATH}` hitting a canary capability with a sticky path key (mirroring sampled out), every "
            "process polling the store each second. `flags-off`: the same worker (`build_proxy`) with "
            "`StaticFlags` and no refresher, forked as `strangler serve` forks (no admin process). "
            f"`proxy.py strangler`: `bench/proxy.py`'s configuration (one capability, `GET {proxy_bench.PATH}`).",
            "",
            "| proxy | req/s | p50 µs | p99 µs | proxy CPU µs/req | others' CPU (cores) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for c in (on, off, base):
            lines.append(f"| {c.name} | {c.median('rps'):.0f} | {c.median('p50_us'):.0f} | {c.median('p99_us'):.0f} "
                         f"| {c.median('proxy_cpu_us'):.0f} | {c.median('others_cores'):.2f} |")
        cpu_ratio = on.median("proxy_cpu_us") / off.median("proxy_cpu_us")
        paired = statistics.median(a.rps / b.rps for a, b in zip(on.runs, off.runs, strict=True))
        lines += [
            "",
            "Per round, req/s (flags-on / flags-off / proxy.py strangler): " + "; ".join(
                f"{a.rps:.0f} / {b.rps:.0f} / {c.rps:.0f}" for a, b, c in zip(on.runs, off.runs, base.runs,
                                                                              strict=True)) + ".",
            "Per round, proxy CPU µs/req: " + "; ".join(
                f"{a.proxy_cpu_us:.0f} / {b.proxy_cpu_us:.0f} / {c.proxy_cpu_us:.0f}"
                for a, b, c in zip(on.runs, off.runs, base.runs, strict=True)) + ".",
            "",
            f"flags-on / flags-off: {ratio:.3f} in req/s (median of the per-round ratios {paired:.3f}), "
            f"{cpu_ratio:.3f} in CPU per request; flags-on / proxy.py strangler: "
            f"{on.median('rps') / base.median('rps'):.3f} in req/s, "
            f"{on.median('proxy_cpu_us') / base.median('proxy_cpu_us'):.3f} in CPU per request.",
            "",
            "Target: throughput within 5% of the proxy without the flag machinery. Judged on CPU per request "
            "(on a CPU-bound machine the throughput the proxy can reach is its inverse), because requests per "
            "second swing with the other load from round to round by more than the difference sought: "
            f"{1 / cpu_ratio:.3f} of flags-off's capacity, "
            f"{verdict(1 / cpu_ratio >= TARGETS['throughput_ratio'])}; by req/s medians {ratio:.3f}, "
            f"{verdict(ratio >= TARGETS['throughput_ratio'])}; by the median per-round req/s ratio {paired:.3f}, "
            f"{verdict(paired >= TARGETS['throughput_ratio'])}.",
        ]
    if overlaps is not None:
        lines += ["", overlap_report(overlaps, info).rstrip("\n")]
    if args.notes and Path(args.notes).exists():
        lines += ["", Path(args.notes).read_text().strip()]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def write_results(section: str) -> None:
    """Replace this benchmark's section between its markers (or append it); other sections stay as they are."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if SECTION_START in text and SECTION_END in text:
        head, rest = text.split(SECTION_START, 1)
        text = head + section.rstrip("\n") + rest.split(SECTION_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decision-only", action="store_true")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--overlap-only", action="store_true", help="part 3 only")
    parser.add_argument("--overlap-rounds", type=int, default=5)
    parser.add_argument("--decision-rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=40_000, help="hit requests per decision round")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved wrk rounds (default 5)")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="seconds to wait before each round for other processes to use under 0.25 cores")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--notes", help="a Markdown file appended to the section (analysis written by hand)")
    parser.add_argument("--serve-static", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_static:
        return serve_static(args.serve_static)
    info = proxy_bench.machine()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    if args.overlap_only:
        part = overlap_report(measure_overlap_check(args.overlap_rounds), info)
        print("\n" + part)
        if not args.no_write:
            write_overlap_results(part)
            print(f"wrote {RESULTS}")
        return 0
    overlaps = None if args.throughput_only else measure_overlap_check(args.overlap_rounds)
    decisions = None if args.throughput_only else measure_decisions(args.decision_rounds, args.per_round)
    cells = None
    if not args.decision_only:
        for tool in ("wrk", "nginx"):
            if shutil.which(tool) is None:
                print(f"error: {tool} is not installed (apt-get install {tool})", file=sys.stderr)
                return 2
        cells = measure_throughput(args)
    section = report(info, args, decisions, cells, overlaps)
    print("\n" + section)
    if not args.no_write:
        write_results(section)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The shadow benchmark: what mirroring and comparing cost the gateway, and how fast the comparison engine is.

Measured in one run:

1. One `strangler serve` (2 workers, SQLite store) with three capabilities on the same two static nginx
   upstreams (legacy and new, one worker each): `GET /legacy-mode` in mode `legacy`, `GET /shadow-mode` in
   mode `shadow` (mirrored to new by the worker, compared, stored; `noise_sample` at its default 0.1), and
   `GET /offloaded-mode` in mode `shadow` with `shadow.offload` (the worker hands the mirror to the
   gateway's shadow process). wrk at 1 and 50 connections, the modes alternating (ABC CBA) so that drift on
   a shared machine hits all alike; medians reported. Mirror drops, failures and records the writer
   dropped are read from /metrics.
2. The comparison engine alone, pinned to one core: `Comparator.compare` of two ~2 KB JSON documents
   with one difference, and `orjson.loads` of the same two documents as a reference (CPU time, medians),
   for compact bodies (as orjson writes them: the splice applies) and indented ones (whole documents).
   `--engine-baseline FILE` also measures another compare.py (e.g. an older one from git) for a
   before/after, the two alternating round by round.

    python bench/shadow.py                        # full run; rewrites the "## Shadow mode" section of RESULTS.md
    python bench/shadow.py --duration 3 --repeats 1 --no-write     # quick look
    python bench/shadow.py --engine-only --profile-engine          # the comparison engine, with a cProfile
    git show REV:strangler/shadow/compare.py > /tmp/compare_before.py
    python bench/shadow.py --engine-baseline /tmp/compare_before.py --engine-baseline-label "before: REV"
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import importlib.util
import io
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "RESULTS.md"
SECTION_START = "<!-- bench/shadow.py: start -->"
SECTION_END = "<!-- bench/shadow.py: end -->"
CONNECTIONS = (1, 50)
MODES = {"legacy": "/legacy-mode", "shadow": "/shadow-mode", "offloaded": "/offloaded-mode"}
CAPABILITIES = {"shadow": "shadowed", "offloaded": "offloaded"}  # shadowed modes -> their capability
CURRENT = "strangler.shadow.compare (this tree)"
TARGETS = {"added_p50_us": 50.0, "throughput_share": 60.0, "comparisons_per_s": 20_000.0}


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


proxy_bench = _load("strangler_bench_proxy", BENCH_DIR / "proxy.py")  # nginx, wrk and /proc helpers


# --- the gateway: legacy mode vs shadow mode ------------------------------------------------------------------


def start_static_upstream(workdir: Path, name: str, port: int) -> Any:
    conf = proxy_bench.nginx_config(
        workdir,
        name,
        "worker_processes 1;",
        f"""server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type application/json; return 200 '{proxy_bench.BODY}'; }}
}}""",
    )
    argv = ["nginx", "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"]
    return proxy_bench.start_service(name, argv, workdir)


def gateway_config(workdir: Path, port: int, admin_port: int, legacy_port: int, new_port: int) -> Path:
    path = workdir / "shadow-bench.yaml"
    path.write_text(
        f"""listen: 127.0.0.1:{port}
workers: 2
admin: {{listen: 127.0.0.1:{admin_port}}}
store: sqlite:///{workdir}/shadow-bench.db
limits: {{drain_timeout: 1}}
upstreams:
  legacy: {{url: http://127.0.0.1:{legacy_port}}}
  new: {{url: http://127.0.0.1:{new_port}}}
default_upstream: legacy
capabilities:
  plain:
    legacy: legacy
    new: new
    routes: ["GET {MODES["legacy"]}"]
    mode: legacy
  shadowed:
    legacy: legacy
    new: new
    routes: ["GET {MODES["shadow"]}"]
    mode: shadow
  offloaded:
    legacy: legacy
    new: new
    routes: ["GET {MODES["offloaded"]}"]
    mode: shadow
    shadow: {{offload: true}}
"""
    )
    return path


def shadow_counters(admin_url: str, capability: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{admin_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()

    def total(name: str, **labels: str) -> float:
        value = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                value += float(line.rsplit(" ", 1)[1])
        return value

    return {
        "mirrored": total("strangler_shadow_mirrored_total", capability=capability),
        "compared": total("strangler_shadow_compared_total", capability=capability),
        "dropped": total("strangler_shadow_dropped_total", capability=capability),
        "failed": total("strangler_shadow_failed_total", capability=capability),
        "records_dropped": total("strangler_shadow_records_dropped_total"),
    }


@dataclass
class Cell:
    mode: str
    connections: int
    runs: list[Any] = field(default_factory=list)
    counters: list[dict[str, float]] = field(default_factory=list)  # shadow mode: /metrics deltas per run

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return statistics.median(values) if values else None

    def total(self, counter: str) -> float:
        return sum(c[counter] for c in self.counters)


def measure_gateway(args: argparse.Namespace, workdir: Path) -> dict[tuple[str, int], Cell]:
    cells = {(mode, conns): Cell(mode, conns) for conns in CONNECTIONS for mode in MODES}
    with proxy_bench.services() as started:
        legacy_port, new_port = proxy_bench.free_port(), proxy_bench.free_port()
        legacy = start_static_upstream(workdir, "legacy-upstream", legacy_port)
        started.append(legacy)
        new = start_static_upstream(workdir, "new-upstream", new_port)
        started.append(new)
        for port, service in ((legacy_port, legacy), (new_port, new)):
            proxy_bench.wait_ready(service, f"http://127.0.0.1:{port}/")
        port, admin_port = proxy_bench.free_port(), proxy_bench.free_port()
        conf = gateway_config(workdir, port, admin_port, legacy_port, new_port)
        strangler = shutil.which("strangler") or "strangler"
        gateway = proxy_bench.start_service("strangler", [strangler, "--log-level", "WARNING", "serve", "-c",
                                                          str(conf)], workdir)
        started.append(gateway)
        urls = {mode: f"http://127.0.0.1:{port}{path}" for mode, path in MODES.items()}
        for url in urls.values():
            proxy_bench.wait_ready(gateway, url)
        admin_url = f"http://127.0.0.1:{admin_port}"
        ours = gateway.pids + legacy.pids + new.pids
        for conns in CONNECTIONS:
            proxy_bench.wait_for_quiet(ours, args.quiet_wait)
            for mode in MODES:
                proxy_bench.run_wrk(urls[mode], conns, args.warmup, gateway, legacy)
            for i in range(args.repeats):
                order = list(MODES) if i % 2 == 0 else list(reversed(MODES))  # ABC CBA against drift
                for mode in order:
                    capability = CAPABILITIES.get(mode, "plain")
                    before = shadow_counters(admin_url, capability)
                    run = proxy_bench.run_wrk(urls[mode], conns, args.duration, gateway, legacy)
                    time.sleep(1.5)  # let mirrors in flight finish and the writer flush
                    after = shadow_counters(admin_url, capability)
                    cell = cells[(mode, conns)]
                    cell.runs.append(run)
                    extra = ""
                    if mode in CAPABILITIES:
                        delta = {k: after[k] - before[k] for k in after}
                        delta["requests"] = run.requests
                        cell.counters.append(delta)
                        extra = f"mirrored {delta['mirrored']:.0f} dropped {delta['dropped']:.0f}"
                    print(f"  {mode:9} c={conns:<3} run {i + 1}: {run.rps:8.0f} req/s  p50 {run.p50_us:7.0f} µs  "
                          f"p99 {run.p99_us:7.0f} µs  gateway CPU {run.proxy_cpu_us or 0:5.0f} µs/req  "
                          f"errors {run.errors}  others {run.others_cores:.2f} cores  {extra}", flush=True)
    return cells


# --- the comparison engine ------------------------------------------------------------------------------------


def document(orders: int = 12) -> dict[str, Any]:
    """A customer with orders: ~2 KB of typical API JSON (strings, numbers, bools, nested objects, arrays)."""
    return {
        "id": 4711, "name": "Ada Lovelace", "email": "ada@example.com", "active": True, "score": 98.5,
        "address": {"street": "12 Analytical Row", "city": "London", "zip": "N1 9GU", "country": "GB"},
        "tags": ["vip", "early-adopter", "newsletter"],
        "orders": [{"id": 1000 + i, "sku": f"SKU-{i:05d}", "qty": i % 3 + 1, "price": round(9.99 + i, 2),
                    "status": "shipped", "gift": False, "items": [{"line": j, "code": f"L{j}"} for j in range(2)]}
                   for i in range(orders)],
        "meta": {"generated_at": "2024-05-01T10:00:00Z", "version": 3},
    }


def rate(fn: Callable[[], object], n: int) -> float:
    """Calls per CPU second of this process (other processes' load does not count against it)."""
    started = time.process_time()
    for _ in range(n):
        fn()
    return n / (time.process_time() - started)


@dataclass
class EngineResult:
    name: str
    bodies: str
    document_bytes: int
    comparisons: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)


BODIES = {"compact": None, "indented": orjson.OPT_INDENT_2}  # as orjson writes them (canonical), or not


def measure_engines(modules: list[tuple[ModuleType, str]], rounds: int, n: int) -> list[EngineResult]:
    """Every engine on every kind of bodies, round by round in turn, so that all see the same machine."""
    from strangler.shadow.config import CompareConfig

    a = document()
    b = copy.deepcopy(a)
    b["orders"][7]["status"] = "returned"
    ct = "application/json"
    cases = []
    for bodies, option in BODIES.items():
        raw_a, raw_b = orjson.dumps(a, option=option), orjson.dumps(b, option=option)
        for module, name in modules:
            primary = module.CapturedResponse(200, {"content-type": ct}, raw_a, ct)
            other = module.CapturedResponse(200, {"content-type": ct}, raw_b, ct)
            comparator = module.Comparator(CompareConfig())
            found = comparator.compare(primary, other)
            result = EngineResult(name, bodies, (len(raw_a) + len(raw_b)) // 2, differences=[d.path for d in found])
            cases.append((result, comparator, primary, other, raw_a, raw_b))
    for _ in range(rounds):
        for result, comparator, primary, other, raw_a, raw_b in cases:
            result.comparisons.append(rate(lambda c=comparator, p=primary, o=other: c.compare(p, o), n))
            result.loads.append(rate(lambda x=raw_a, y=raw_b: (orjson.loads(x), orjson.loads(y)), n))
    return [case[0] for case in cases]


def profile_engine(module: ModuleType) -> str:
    from strangler.shadow.config import CompareConfig

    a = document()
    b = copy.deepcopy(a)
    b["orders"][7]["status"] = "returned"
    ct = "application/json"
    primary = module.CapturedResponse(200, {"content-type": ct}, orjson.dumps(a), ct)
    other = module.CapturedResponse(200, {"content-type": ct}, orjson.dumps(b), ct)
    comparator = module.Comparator(CompareConfig())
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5000):
        comparator.compare(primary, other)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(8)
    text = out.getvalue()
    return "\n".join(line for line in text.splitlines() if line.strip())[-2000:]


def on_one_core(fn: Callable[[], Any]) -> Any:
    """Run `fn` pinned to the last CPU (the gateway part is over by then)."""
    previous = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(previous)})
    try:
        return fn()
    finally:
        os.sched_setaffinity(0, previous)


# --- report ---------------------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def gateway_tables(cells: dict[tuple[str, int], Cell]) -> str:
    rows = ["| mode | conns | req/s | p50 µs | p99 µs | gateway CPU µs/req | other processes (cores) | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (mode, conns), cell in sorted(cells.items(), key=lambda item: (item[0][1], list(MODES).index(item[0][0]))):
        rows.append(f"| {mode} | {conns} | {_fmt(cell.median('rps'))} | {_fmt(cell.median('p50_us'))} "
                    f"| {_fmt(cell.median('p99_us'))} | {_fmt(cell.median('proxy_cpu_us'))} "
                    f"| {_fmt(cell.median('others_cores'), '.2f')} | {sum(r.errors for r in cell.runs)} |")
    rows += ["", "| mode | conns | requests | mirrored | compared | dropped | failed | records not stored |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in CAPABILITIES:
        for conns in CONNECTIONS:
            cell = cells[(mode, conns)]
            rows.append(f"| {mode} | {conns} | {cell.total('requests'):.0f} | {cell.total('mirrored'):.0f} "
                        f"| {cell.total('compared'):.0f} | {cell.total('dropped'):.0f} "
                        f"| {cell.total('failed'):.0f} | {cell.total('records_dropped'):.0f} |")
    return "\n".join(rows)


def engine_table(results: list[EngineResult]) -> str:
    rows = ["| engine | bodies | document | comparisons/s (median, best) | orjson.loads of both /s (median) "
            "| compare / loads time |", "|---|---|---:|---:|---:|---:|"]
    for r in results:
        ratio = statistics.median(lo / co for co, lo in zip(r.comparisons, r.loads, strict=True))
        rows.append(f"| {r.name} | {r.bodies} | {r.document_bytes} B | {statistics.median(r.comparisons):,.0f} "
                    f"({max(r.comparisons):,.0f}) | {statistics.median(r.loads):,.0f} | {ratio:.2f}x |")
    return "\n".join(rows)


def targets_table(cells: dict[tuple[str, int], Cell] | None, engine: EngineResult | None) -> str:
    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**missed**")

    rows = ["| measure | value | target | verdict |", "|---|---:|---:|---|"]
    measured = cells or {}
    for mode in CAPABILITIES if measured else ():
        mode_p50, legacy_p50 = measured[(mode, 1)].median("p50_us"), measured[("legacy", 1)].median("p50_us")
        added = mode_p50 - legacy_p50 if mode_p50 is not None and legacy_p50 is not None else None
        rows.append(f"| {mode}: added p50 over legacy mode, 1 conn | {_fmt(added)} µs "
                    f"| <= {TARGETS['added_p50_us']:.0f} µs "
                    f"| {verdict(None if added is None else added <= TARGETS['added_p50_us'])} |")
        mode_rps, legacy_rps = measured[(mode, 50)].median("rps"), measured[("legacy", 50)].median("rps")
        share = 100 * mode_rps / legacy_rps if mode_rps and legacy_rps else None
        rows.append(f"| {mode}: req/s as % of legacy mode's, 50 conns | {_fmt(share, '.1f')}% "
                    f"| >= {TARGETS['throughput_share']:.0f}% "
                    f"| {verdict(None if share is None else share >= TARGETS['throughput_share'])} |")
        dropped = sum(measured[(mode, c)].total("dropped") for c in CONNECTIONS)
        mirrors = sum(measured[(mode, c)].total("requests") for c in CONNECTIONS)
        rows.append(f"| {mode}: mirrors dropped (in-flight cap 100 per worker, at most 50 requests in flight) "
                    f"| {dropped:.0f} of {mirrors:.0f} | 0 | {verdict(dropped == 0)} |")
    if engine is not None:
        value = statistics.median(engine.comparisons)
        rows.append(f"| comparisons/s, two {engine.document_bytes} B documents ({engine.bodies}), one difference, "
                    f"one core | {value:,.0f} | >= {TARGETS['comparisons_per_s']:,.0f} "
                    f"| {verdict(value >= TARGETS['comparisons_per_s'])} |")
    return "\n".join(rows)


def results_section(info: dict[str, str], args: argparse.Namespace, cells: dict[tuple[str, int], Cell] | None,
                    engines: list[EngineResult], profile: str | None) -> str:
    parts = [SECTION_START, "## Shadow mode", "",
             "Run `python bench/shadow.py`: one `strangler serve` (2 workers, SQLite store) with a capability in "
             "mode `legacy`, one in mode `shadow` (mirrors run by the worker) and one in mode `shadow` with "
             "`shadow.offload` (mirrors handed to the shadow process) on the same two static nginx upstreams "
             f"(legacy and new, one worker each, {len(proxy_bench.BODY)}-byte JSON body); wrk {args.duration:g} s "
             "per run, "
             f"{args.repeats} runs per cell with the modes alternating, "
             f"medians; the engine: {args.engine_rounds} rounds of {args.engine_calls} calls, CPU time of "
             "this process, pinned to one core. The machine is shared with other work: the `other processes` "
             "column is the CPU they used during each run (median), and medians are what to read.", "",
             "\n".join(f"- {k}: {v}" for k, v in info.items()), ""]
    if cells is not None:
        parts += ["### Gateway: legacy mode vs shadow mode, in the worker and offloaded (same process, same "
                  "upstreams)", "",
                  gateway_tables(cells), ""]
    if engines:
        parts += ["### Comparison engine", "", engine_table(engines), "",
                  "Differences found: " + "; ".join(f"{e.name}, {e.bodies}: {', '.join(e.differences)}"
                                                    for e in engines) + ".", ""]
    current = [e for e in engines if e.name == CURRENT and e.bodies == "compact"]
    parts += ["### Targets", "", targets_table(cells, current[0] if current else None)]
    if args.notes and Path(args.notes).exists():
        parts += ["", Path(args.notes).read_text().strip()]
    if profile:
        parts += ["", "### Engine profile (cProfile, 5000 comparisons)", "", "```", profile, "```"]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per mode and level")
    parser.add_argument("--repeats", type=int, default=4, help="runs per mode and level (default 4: ABBA twice)")
    parser.add_argument("--quiet-wait", type=float, default=30.0, metavar="SECONDS",
                        help="before each connection level, wait up to SECONDS for other processes to go quiet")
    parser.add_argument("--engine-only", action="store_true", help="measure the comparison engine only")
    parser.add_argument("--engine-rounds", type=int, default=15)
    parser.add_argument("--engine-calls", type=int, default=3000)
    parser.add_argument("--engine-baseline", metavar="FILE", help="also measure this compare.py (before/after)")
    parser.add_argument("--engine-baseline-label", metavar="TEXT", help="its name in the table")
    parser.add_argument("--profile-engine", action="store_true", help="add a cProfile of the engine")
    parser.add_argument("--notes", help="a Markdown file appended to the section (analysis written by hand)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    if not args.engine_only:
        for tool in ("wrk", "nginx"):
            if shutil.which(tool) is None:
                print(f"error: {tool} is not installed (apt-get install {tool})", file=sys.stderr)
                return 2
    info = proxy_bench.machine()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    cells = None
    if not args.engine_only:
        workdir = Path(tempfile.mkdtemp(prefix="strangler-shadow-bench-"))
        try:
            cells = measure_gateway(args, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    import strangler.shadow.compare as current

    modules = [(current, CURRENT)]
    if args.engine_baseline:
        label = args.engine_baseline_label or f"before: {args.engine_baseline}"
        modules.insert(0, (_load("compare_baseline", Path(args.engine_baseline)), label))
    engines = on_one_core(lambda: measure_engines(modules, args.engine_rounds, args.engine_calls))
    profile = on_one_core(lambda: profile_engine(current)) if args.profile_engine else None
    section = results_section(info, args, cells, engines, profile)
    print()
    print(re.sub(r"<!--.*?-->\n?", "", section))
    if not args.no_write:
        write_results(section)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

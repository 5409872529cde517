"""The reconciliation benchmark: two PostgreSQL databases of 1,000,000 rows x 6 columns, 100 differences.

Measured in one run, `--repeats` times, medians reported:
  floor      each database computes one checksum over its whole table - the same normalised row hash the job
             uses - both at once, as the job reads both sides at once (the floor for any hash-based comparison)
  raw floor  the same without normalisation (`hashtextextended(row::text)`), to show what normalisation costs
  job        `Reconciliation.run_job` end to end in a fresh process: plan (column types, key bounds), chunked
             checksums, leaves, drift records written to a store; peak RSS of that process
  job 100k   the same job over the first 100,000 keys (views), to show memory does not grow with the table

The two databases live in one private cluster on this machine (tests/support/postgres.py), so both sides
share its 2 cores, as the floor's two queries do.

    python bench/reconcile.py                      # full run; prints a table; rewrites "## Reconciliation"
    python bench/reconcile.py --rows 200000 --repeats 1 --no-write     # quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench/reconcile.py: start -->", "<!-- bench/reconcile.py: end -->"
sys.path.insert(0, str(ROOT))

LEGACY = """
CREATE TABLE customers (id integer PRIMARY KEY, full_name text, email varchar(200), balance numeric(12,2),
                        active boolean, updated timestamptz);
INSERT INTO customers SELECT g, 'name ' || g, 'user' || g || '@example.org', round((g % 100000) / 7.0, 2),
       g % 3 = 0, timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second' FROM generate_series(1, {rows}) g;
CREATE VIEW customers_100k AS SELECT * FROM customers WHERE id <= 100000;
"""
NEW = """
CREATE TABLE customers (customer_id bigint PRIMARY KEY, name text, email text, balance numeric(16,4),
                        is_active boolean, updated_local timestamp);
INSERT INTO customers SELECT g, 'name ' || g || CASE WHEN g % 10 = 0 THEN '  ' ELSE '' END,
       ' user' || g || '@example.org', round((g % 100000) / 7.0, 2), g % 3 = 0,
       (timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second') AT TIME ZONE 'Europe/Berlin'
FROM generate_series(1, {rows}) g;
CREATE VIEW customers_100k AS SELECT * FROM customers WHERE customer_id <= 100000;
"""


def config_text(store: str, legacy: str, new: str, table: str) -> str:
    return f"""
store: {store}
precedence:
  entities:
    customer: {{groups: {{all: {{fields: [/full_name, /email, /balance, /active, /updated], authority: legacy}}}}}}
reconcile:
  jobs:
    bench:
      entity: customer
      legacy: {{url: "{legacy}", table: {table}, key: [id]}}
      new: {{url: "{new}", table: {table}, key: [customer_id], timezone: Europe/Berlin}}
      fields: {{full_name: name, email: email, balance: balance, active: is_active, updated: updated_local}}
"""


def child(args: argparse.Namespace) -> None:
    """One job in this process; prints its figures and this process's peak RSS as JSON."""
    import resource

    from strangler.config import load_config_text
    from strangler.reconcile.service import Reconciliation
    from strangler.store import create_store_engine, upgrade_schema

    config = load_config_text(config_text(args.store, args.legacy, args.new, args.table))
    upgrade_schema(config.store)
    service = Reconciliation(config, create_store_engine(config.store), lambda: dt.datetime.now(dt.UTC))
    started = time.perf_counter()
    report = service.run_job("bench", {})
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "compared": report.compared, "drifted": len(report.drifted),
                      "queries": report.queries, "rows_read": report.read_rows,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(legacy: str, new: str, table: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/store.db"
        out = subprocess.run([sys.executable, __file__, "--child", "--store", store, "--legacy", legacy,
                              "--new", new, "--table", table], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def floors(legacy: str, new: str) -> tuple[float, float]:
    from strangler.config import load_config_text
    from strangler.reconcile.plan import build_plan

    config = load_config_text(config_text("sqlite://", legacy, new, "customers"))
    plan = build_plan("bench", config.reconcile.jobs["bench"])
    sides = plan.sql_sides
    with ThreadPoolExecutor(2) as pool:
        started = time.perf_counter()
        list(pool.map(lambda s: s.whole_checksum(), sides))
        normalised = time.perf_counter() - started

        def raw(dsn: str) -> None:
            with psycopg.connect(dsn) as conn:
                conn.execute("SELECT count(*), sum(hashtextextended(c::text, 0)) FROM customers c").fetchone()

        started = time.perf_counter()
        list(pool.map(raw, [legacy.replace("+psycopg", ""), new.replace("+psycopg", "")]))
        raw_seconds = time.perf_counter() - started
    plan.close()
    return normalised, raw_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--differences", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("store", "legacy", "new", "table"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from tests.support.postgres import PostgresCluster

    with PostgresCluster() as cluster:
        cluster.start()
        dbs = [cluster.create_database(name) for name in ("legacy", "new")]
        started = time.perf_counter()
        for db, sql in zip(dbs, (LEGACY, NEW), strict=True):
            with psycopg.connect(db.dsn, autocommit=True) as conn:
                conn.execute(sql.format(rows=args.rows))
        with psycopg.connect(dbs[1].dsn, autocommit=True) as conn:
            step = args.rows // args.differences
            for i in range(args.differences):
                key = 7 + i * step
                conn.execute("UPDATE customers SET email = 'changed' WHERE customer_id = %s", (key,))
            for db in dbs:
                with psycopg.connect(db.dsn, autocommit=True) as c:
                    c.execute("VACUUM ANALYZE customers")
        print(f"loaded 2 x {args.rows:,} rows in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        legacy, new = dbs[0].url(), dbs[1].url()
        rows: dict[str, list[float]] = {"floor": [], "raw": [], "job": [], "rss": [], "job100k": [], "rss100k": []}
        last: dict[str, Any] = {}
        for i in range(args.repeats):
            floor, raw = floors(legacy, new)
            last = run_child(legacy, new, "customers")
            small = run_child(legacy, new, "customers_100k")
            if last["drifted"] != args.differences:
                raise SystemExit(f"the job found {last['drifted']} drifted entities, not {args.differences}")
            for key, value in (("floor", floor), ("raw", raw), ("job", last["seconds"]), ("rss", last["peak_rss_mb"]),
                               ("job100k", small["seconds"]), ("rss100k", small["peak_rss_mb"])):
                rows[key].append(value)
            print(f"repeat {i + 1}: floor {floor:.2f} s, raw floor {raw:.2f} s, job {last['seconds']:.2f} s "
                  f"({last['seconds'] / floor:.2f}x), peak RSS {last['peak_rss_mb']:.0f} MB; 100k job "
                  f"{small['seconds']:.2f} s, {small['peak_rss_mb']:.0f} MB", file=sys.stderr)
        med = {k: statistics.median(v) for k, v in rows.items()}
        section = render(args, med, rows, last)
        print(section)
        if not args.no_write:
            write_section(section)


def render(args: argparse.Namespace, med: dict[str, float], rows: dict[str, list[float]], last: dict[str, Any]) -> str:
    ratios = [j / f for j, f in zip(rows["job"], rows["floor"], strict=True)]
    load = os.getloadavg()[0]
    found = f"{last['drifted']} drifted found, {last['queries']} queries, {last['rows_read']} rows read"
    lines = [
        ("floor: both databases checksum their whole table at once (normalised)", "floor", " s", 2),
        ("raw floor: the same without normalisation", "raw", " s", 2),
        (f"job, end to end ({found})", "job", " s", 2),
        (f"peak RSS of the job process, {args.rows:,} rows", "rss", " MB", 0),
        ("job over the first 100,000 keys", "job100k", " s", 2),
        ("peak RSS of the job process, 100,000 rows", "rss100k", " MB", 0),
    ]
    table = ["| measure | median | repeats |", "|---|---|---|"]
    for label, key, unit, digits in lines:
        table.append(f"| {label} | {med[key]:.{digits}f}{unit} | {_list(rows[key], unit, digits)} |")
        if key == "job":
            table.append(f"| job / floor | {statistics.median(ratios):.2f}x | {_list(ratios, 'x')} |")
    table_text = "\n".join(table)
    return f"""## Reconciliation

`python bench/reconcile.py` on {dt.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores,
{platform.python_version()}, PostgreSQL in one private cluster (both databases), load average at the end
{load:.1f} (other work was running). {args.rows:,} rows x 6 columns per side, {args.differences} differences; the
new side differs in shape (bigint key under another name, padded strings, numeric(16,4), naive Berlin times)
so every row is normalised. Medians of {args.repeats} repeats; each repeat's figures in the last column.

{table_text}

The job reads every row once inside each database (the checksums of 4,096 key-range buckets per chunk of
about 100,000 keys), then only the buckets whose checksums differ, through the key's index, and fetches
{last['rows_read']:,} rows of {2 * args.rows:,}. What it adds to the floor: the bucket aggregation, the
reads of the differing buckets (with {args.differences} differences spread evenly, every chunk differs),
planning (column types, key bounds, a block sample of the keys for the chunk edges) and the store's writes.
The floor's query per side uses PostgreSQL's parallel workers; the chunk queries are asked to use them too.
Memory: the same peak RSS (mostly the interpreter and its libraries) for 100,000 and {args.rows:,} rows:
what is held is one chunk's bucket figures and leaves (or, when a chunk mostly differs, a stream of its
rows) and the drift found, not the table.
"""


def _list(values: list[float], unit: str = " s", digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}{unit}" for v in values)


def write_section(section: str, start: str = START, end: str = END) -> None:
    """Replaces a benchmark's part of bench/RESULTS.md (between its markers, this one's by default) and nothing
    else."""
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{start}\n{section.rstrip()}\n{end}\n"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) + 1:]
    else:
        text = text.rstrip() + "\n\n" + block
    path.write_text(text)


if __name__ == "__main__":
    main()

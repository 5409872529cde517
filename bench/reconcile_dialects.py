"""Reconciliation across databases: the job's time against each pairing's floor, and the portable hash's cost.

Each side holds the same `--rows` customers (integer key, padded text on the new side, numeric(12,2) against
(16,4), a boolean, a timestamp), with `--differences` changed e-mails on the new side. For each pairing of
PostgreSQL (a private cluster), MariaDB (the machine's server, a private database) and SQLite (files):

  floor  both sides compute the checksum of their whole table at once, with the row hash the job uses
  job    `Reconciliation.run_job` end to end (plan, chunked checksums, leaves, drift written to a store)

and, on the PostgreSQL table alone, one whole-table checksum with PostgreSQL's own hash (`hashtextextended`,
used when both sides are PostgreSQL) against the portable one (MD5, used when a side is not). Pairings are
measured in turn, `--repeats` rounds, medians.

    python bench/reconcile_dialects.py                    # writes its section of bench/RESULTS.md
    python bench/reconcile_dialects.py --rows 20000 --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pymysql
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench/reconcile_dialects.py: start -->", "<!-- bench/reconcile_dialects.py: end -->"
sys.path.insert(0, str(ROOT))
MARIADB = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": ""}
PAIRS = [("postgresql", "postgresql"), ("postgresql", "mariadb"), ("mariadb", "mariadb"), ("sqlite", "sqlite"),
         ("sqlite", "postgresql")]
TYPES = {  # integer, text, legacy decimal, new decimal, boolean, timestamp
    "postgresql": ("bigint", "text", "numeric(12,2)", "numeric(16,4)", "boolean", "timestamp"),
    "mariadb": ("BIGINT", "VARCHAR(200)", "DECIMAL(12,2)", "DECIMAL(16,4)", "BOOLEAN", "DATETIME(6)"),
    "sqlite": ("INTEGER", "TEXT", "DECIMAL(12,2)", "NUMERIC(16,4)", "BOOLEAN", "TIMESTAMP"),
}


def series(dialect: str, rows: int) -> str:
    """A query of the numbers 1..rows as `g`."""
    if dialect == "postgresql":
        return f"SELECT g FROM generate_series(1, {rows}) AS g"
    if dialect == "mariadb":
        return f"SELECT seq AS g FROM seq_1_to_{rows}"
    return f"WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < {rows}) SELECT g FROM s"


def load(url: str, dialect: str, side: str, rows: int, differences: int) -> None:
    integer, text_type, legacy_decimal, new_decimal, boolean, timestamp = TYPES[dialect]
    new = side == "new"
    concat = (lambda *p: f"CONCAT({', '.join(p)})") if dialect == "mariadb" else (lambda *p: " || ".join(p))
    pad = "CASE WHEN g % 10 = 0 THEN '  ' ELSE '' END" if new else "''"
    stamp = {"postgresql": "timestamp '2024-01-01' + g * interval '1 second'",
             "mariadb": "TIMESTAMP '2024-01-01 00:00:00' + INTERVAL g SECOND",
             "sqlite": "datetime('2024-01-01', '+' || g || ' seconds')"}[dialect]
    truthy = "g % 3 = 0" if dialect != "sqlite" else "(g % 3 = 0)"
    name, email = concat("'name '", "g", pad), concat("'user'", "g", "'@example.org'")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE customers (id {integer} PRIMARY KEY, name {text_type}, email {text_type}, "
                          f"balance {new_decimal if new else legacy_decimal}, active {boolean}, "
                          f"updated {timestamp})"))
        conn.execute(text(
            f"INSERT INTO customers SELECT g, {name}, {email}, ROUND((g % 100000) / 7.0, 2), {truthy}, {stamp} "
            f"FROM ({series(dialect, rows)}) AS numbers"))
        if new:
            step = rows // differences
            conn.execute(text("UPDATE customers SET email = 'changed' WHERE id IN (" +
                              ",".join(str(7 + i * step) for i in range(differences)) + ")"))
    engine.dispose()


def job_config(store: str, legacy: str, new: str) -> str:
    return f"""
store: {store}
reconcile:
  jobs:
    bench:
      entity: customer
      legacy: {{url: "{legacy}", table: customers, key: [id]}}
      new: {{url: "{new}", table: customers, key: [id]}}
      fields: {{name: name, email: email, balance: balance, active: active, updated: updated}}
      no_authority: report
"""


def measure(legacy: str, new: str, store: str, differences: int) -> tuple[float, float]:
    """(floor seconds, job seconds) of one pairing."""
    from strangler.config import load_config_text
    from strangler.reconcile.plan import build_plan
    from strangler.reconcile.service import Reconciliation
    from strangler.store import create_store_engine

    config = load_config_text(job_config(store, legacy, new))
    plan = build_plan("bench", config.reconcile.jobs["bench"])
    with ThreadPoolExecutor(2) as pool:
        started = time.perf_counter()
        list(pool.map(lambda s: s.whole_checksum(), plan.sql_sides))
        floor = time.perf_counter() - started
    plan.close()
    service = Reconciliation(config, create_store_engine(store), lambda: dt.datetime.now(dt.UTC))
    started = time.perf_counter()
    report = service.run_job("bench", {})
    seconds = time.perf_counter() - started
    if len(report.drifted) != differences:
        raise SystemExit(f"{legacy} / {new}: {len(report.drifted)} drifted entities, not {differences}")
    return floor, seconds


def hash_costs(url: str) -> tuple[float, float]:
    """One whole-table checksum of the PostgreSQL table with PostgreSQL's own hash, then with the portable one."""
    from strangler.config import load_config_text
    from strangler.reconcile.plan import build_plan
    from strangler.reconcile.sql_side import SqlStateSide

    config = load_config_text(job_config("sqlite://", url, url))
    plan = build_plan("bench", config.reconcile.jobs["bench"])
    side = plan.sql_sides[0]
    out = []
    for portable in (False, True):
        alike = SqlStateSide(side.config, portable=portable)
        alike.bind(plan.key_kinds, list(plan.names), plan.kinds)
        started = time.perf_counter()
        alike.whole_checksum()
        out.append(time.perf_counter() - started)
        alike.close()
    plan.close()
    return out[0], out[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--differences", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from tests.support.postgres import PostgresCluster

    maria_dbs = {side: f"strangler_bench_{side}_{uuid.uuid4().hex[:8]}" for side in ("legacy", "new")}
    with PostgresCluster() as cluster, tempfile.TemporaryDirectory() as tmp:
        cluster.start()
        urls = {}
        with pymysql.connect(**MARIADB) as conn, conn.cursor() as cursor:
            for name in maria_dbs.values():
                cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
        try:
            for side in ("legacy", "new"):
                urls[("postgresql", side)] = cluster.create_database(side).url()
                urls[("mariadb", side)] = f"mysql+pymysql://root@127.0.0.1:3306/{maria_dbs[side]}"
                urls[("sqlite", side)] = f"sqlite:///{tmp}/{side}.db"
            started = time.perf_counter()
            for (dialect, side), url in urls.items():
                load(url, dialect, side, args.rows, args.differences)
            print(f"loaded {len(urls)} x {args.rows:,} rows in {time.perf_counter() - started:.1f} s", file=sys.stderr)
            results: dict[tuple[str, str], list[tuple[float, float]]] = {pair: [] for pair in PAIRS}
            hashes: list[tuple[float, float]] = []
            loads = []
            for i in range(args.repeats):
                order = PAIRS if i % 2 == 0 else list(reversed(PAIRS))
                for legacy, new in order:
                    store = f"sqlite:///{tmp}/store-{legacy}-{new}-{i}.db"
                    from strangler.store import upgrade_schema

                    upgrade_schema(store)
                    floor, job = measure(urls[(legacy, "legacy")], urls[(new, "new")], store, args.differences)
                    results[(legacy, new)].append((floor, job))
                    print(f"round {i + 1} {legacy}/{new}: floor {floor:.2f} s, job {job:.2f} s ({job / floor:.2f}x)",
                          file=sys.stderr)
                hashes.append(hash_costs(urls[("postgresql", "legacy")]))
                loads.append(os.getloadavg()[0])
        finally:
            with pymysql.connect(**MARIADB) as conn, conn.cursor() as cursor:
                for name in maria_dbs.values():
                    cursor.execute(f"DROP DATABASE IF EXISTS {name}")
    section = render(args, results, hashes, loads)
    print(section)
    if not args.no_write:
        from bench.reconcile import write_section

        write_section(section, START, END)


def render(args: argparse.Namespace, results: dict[tuple[str, str], list[tuple[float, float]]],
           hashes: list[tuple[float, float]], loads: list[float]) -> str:
    names = {"postgresql": "PostgreSQL", "mariadb": "MariaDB", "sqlite": "SQLite"}
    table = ["| legacy / new | floor | job | job / floor | rounds (job / floor) |", "|---|---:|---:|---:|---|"]
    for (legacy, new), runs in results.items():
        floor = statistics.median(f for f, _ in runs)
        job = statistics.median(j for _, j in runs)
        ratio = statistics.median(j / f for f, j in runs)
        each = ", ".join(f"{j:.2f} / {f:.2f} s" for f, j in runs)
        table.append(f"| {names[legacy]} / {names[new]} | {floor:.2f} s | {job:.2f} s | {ratio:.2f}x | {each} |")
    native = statistics.median(n for n, _ in hashes)
    portable = statistics.median(p for _, p in hashes)
    table_text = "\n".join(table)
    per_round = "; ".join(f"{n:.2f} / {p:.2f} s" for n, p in hashes)
    return f"""## Reconciliation across databases

`python bench/reconcile_dialects.py` on {dt.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores,
Python {platform.python_version()}; PostgreSQL in a private cluster, the machine's MariaDB server, SQLite files, all
on this machine (load average {min(loads):.1f} to {max(loads):.1f}: other work was running). {args.rows:,} rows per
side, {args.differences} changed e-mails; the new side has padded names and numeric(16,4) against (12,2). Pairings
in turn, reversed every other round, {args.repeats} rounds, medians.

{table_text}

One whole-table checksum of the PostgreSQL table: PostgreSQL's own hash {native:.2f} s, the portable MD5 hash
{portable:.2f} s ({portable / native:.2f}x; per round, own / portable: {per_round}).
"""


if __name__ == "__main__":
    main()

"""`strangler reconcile -c FILE [JOB] [--format table|json] [--repair emit] [--every 15m] [--show]`.

Exit codes: 0 no drift, 5 drift found, 2 bad input, 1 a side or the store could not be read,
130 interrupted (the checkpoint is kept: the next run resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DRIFT, EXIT_INTERRUPTED = 0, 1, 2, 5, 130


def add_parser(sub: Any) -> None:
    p = sub.add_parser("reconcile", help="compare the state each side holds; record drift and its age")
    p.add_argument("-c", "--config", required=True, metavar="FILE")
    p.add_argument("job", nargs="?", help="one job (default: every job)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.add_argument("--repair", choices=["emit"], help="publish the authoritative state of each drifted entity")
    p.add_argument("--every", metavar="DURATION", help="run again at this interval (e.g. 15m) until stopped")
    p.add_argument("--show", action="store_true", help="print the stored open drift without comparing")
    p.set_defaults(func=run)


class RichProgress:
    """One bar per job, in chunks; shown only on a terminal."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[compared]:,} compared, {task.fields[drifted]:,} drifted"),
                            TimeElapsedColumn(), console=console, transient=False)
        self._tasks: dict[str, Any] = {}

    def begin(self, job: str, chunks: int, done: int, rows: int) -> None:
        label = f"{job} (~{rows:,} rows)" if rows else job
        self._tasks[job] = self.bar.add_task(label, total=chunks, completed=done, compared=0, drifted=0)

    def advance(self, job: str, compared: int, drifted: int) -> None:
        task = self._tasks[job]
        fields = self.bar.tasks[task].fields
        self.bar.update(task, advance=1, compared=fields["compared"] + compared, drifted=fields["drifted"] + drifted)


def run(args: argparse.Namespace) -> int:
    from strangler.app import utcnow
    from strangler.config import load_config
    from strangler.reconcile.config import parse_duration
    from strangler.reconcile.errors import ReconcileError
    from strangler.reconcile.repair import repair_publisher
    from strangler.reconcile.runner import group_records
    from strangler.reconcile.service import Reconciliation, stored_modes
    from strangler.store import StoreUnavailable, create_store_engine, upgrade_schema

    config = load_config(args.config)
    jobs = config.reconcile.jobs
    if args.job is not None and args.job not in jobs:
        print(f"error: unknown job {args.job!r} ({', '.join(sorted(jobs)) or 'none configured'})", file=sys.stderr)
        return EXIT_BAD_INPUT
    names = [args.job] if args.job else list(jobs)
    if not names:
        print("error: no reconciliation jobs are configured (reconcile.jobs)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.repair and config.reconcile.repair is None:
        print("error: --repair emit needs reconcile.repair (a kafka topic or a jsonl path)", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        every = parse_duration(args.every) if args.every else None
    except ValueError as exc:
        print(f"error: --every: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    console = Console(stderr=True)
    try:
        upgrade_schema(config.store)
        engine = create_store_engine(config.store)
        service = Reconciliation(config, engine, utcnow)
        if args.show:
            shown = [{"job": n, "drifted": group_records(service.store.open_drift(n, 100_000),
                                                         jobs[n].legacy.key, utcnow())} for n in names]
            _print(args.format, shown)
            return EXIT_DRIFT if any(s["drifted"] for s in shown) else EXIT_OK
        stop = threading.Event()
        _graceful_interrupt(stop, console)
        publisher = repair_publisher(config.reconcile.repair) if args.repair and config.reconcile.repair else None
        while True:
            progress = RichProgress(console)
            reports = []
            with progress.bar if console.is_terminal else contextlib.nullcontext():
                for name in names:
                    reports.append(service.run_job(name, stored_modes(config, engine, utcnow), publisher=publisher,
                                                   progress=progress, stop=stop).as_dict())
                    if stop.is_set():
                        break
            _print(args.format, reports)
            if stop.is_set():
                console.print("interrupted: the checkpoint is kept, the next run resumes")
                return EXIT_INTERRUPTED
            if every is None:
                return EXIT_DRIFT if any(r["drifted"] for r in reports) else EXIT_OK
            if stop.wait(every):
                return EXIT_INTERRUPTED
    except (ReconcileError, StoreUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _graceful_interrupt(stop: threading.Event, console: Console) -> None:
    """The first SIGINT or SIGTERM stops after the current chunk; a second SIGINT interrupts at once."""

    def handle(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        console.print("stopping after the current chunk (Ctrl-C again to abort)")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)


def _print(fmt: str, reports: list[dict[str, Any]]) -> None:
    if fmt == "json":
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2, default=str))
        return
    from strangler.reconcile.report import cut_text, format_age

    console = Console()
    for report in reports:
        table = Table(title=f"Drift: {report['job']}")
        for column in ("key", "field", "legacy", "new", "classification", "first seen", "age"):
            table.add_column(column)
        for entry in report["drifted"][:50]:
            for f in entry["fields"]:
                table.add_row(entry["entity_key"], f["field"], cut_text(f["legacy"]), cut_text(f["new"]),
                              f["classification"], f["first_seen"][:19], format_age(entry["age_seconds"]))
        if report["drifted"]:
            console.print(table)
        more = len(report["drifted"]) - 50
        summary = f"{report['job']}: {len(report['drifted']):,} drifted entities"
        if "compared" in report:
            summary += (f" of {report['compared']:,} compared in {report['seconds']} s"
                        f" ({report['resumed_chunks']} chunks resumed, {report['resolved']} drift resolved,"
                        f" {report['reconciled']} changes reconciled, {report['repaired']} repair events,"
                        f" {report['error_count']} errors)")
        console.print(summary + (f"; {more:,} more not shown (use --format json)" if more > 0 else ""))

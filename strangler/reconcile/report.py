"""Open drift as `GET /drift`, `strangler report` and the dashboard show it: per job its figures, its last
run and the drifted entities with their age (read from the drift store; nothing is compared here)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from strangler.precedence.config import PrecedenceConfig
from strangler.reconcile.config import JobConfig
from strangler.reconcile.runner import group_records
from strangler.reconcile.store import SqlDriftStore


def drift_jobs(
    store: SqlDriftStore, jobs: Mapping[str, JobConfig], names: Sequence[str], now: dt.datetime, limit: int = 1000
) -> list[dict[str, Any]]:
    """Per job in `names`: drifted entities, the oldest drift's age, the last run and the open drift grouped
    by entity (at most `limit` drift records each). Raises StoreUnavailable."""
    summary = store.summary(now)
    out = []
    for name in names:
        records = store.open_drift(name, limit)
        runs = store.runs(name, 1)
        figures = summary.get(name, {"drifted_entities": 0, "oldest_drift_seconds": 0.0})
        out.append({"job": name, "entity": jobs[name].entity, **figures,
                    "last_run": runs[0] if runs else None,
                    "drifted": group_records(records, jobs[name].legacy.key, now)})
    return out


def jobs_of_capability(jobs: Mapping[str, JobConfig], precedence: PrecedenceConfig, capability: str) -> list[str]:
    """The jobs whose entity the precedence rules tie to `capability`."""
    return [name for name, job in jobs.items()
            if (rule := precedence.entities.get(job.entity)) is not None and rule.capability == capability]


def format_age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def render_drift_table(console: Console, jobs: Sequence[Mapping[str, Any]], entities: int = 20) -> None:
    """One line per job, then its oldest drifted entities field by field (at most `entities` per job)."""
    if not jobs:  # no reconciliation configured (for this capability): nothing to say
        return
    summary = Table(title="State drift (reconciliation)")
    for column in ("job", "entity", "drifted entities", "oldest drift", "last run"):
        summary.add_column(column)
    for job in jobs:
        run = job["last_run"]
        last = (f"{run['status']} {str(run['finished_at'] or run['started_at'])[:19]}, {run['compared']:,} compared"
                if run else "never run")
        summary.add_row(job["job"], job["entity"], f"{job['drifted_entities']:,}",
                        format_age(job["oldest_drift_seconds"]) if job["drifted_entities"] else "-", last)
    console.print(summary)
    for job in jobs:
        if not job["drifted"]:
            continue
        table = Table(title=f"Drift: {job['job']} (oldest first)")
        for column in ("key", "field", "legacy", "new", "classification", "first seen", "age"):
            table.add_column(column)
        for entry in job["drifted"][:entities]:
            for f in entry["fields"]:
                table.add_row(entry["entity_key"], f["field"], cut_text(f["legacy"]), cut_text(f["new"]),
                              f["classification"], str(f["first_seen"])[:19], format_age(entry["age_seconds"]))
        console.print(table)
        more = job["drifted_entities"] - min(entities, len(job["drifted"]))
        if more > 0:
            console.print(f"{more:,} more drifted entities of {job['job']} not shown (--format json, or "
                          f"strangler reconcile --show)")


def cut_text(value: str | None, width: int = 40) -> str:
    """A value for a table cell: `-` for none, a long one cut to `width` characters."""
    if value is None:
        return "-"
    return value if len(value) <= width else value[: width - 1] + "…"

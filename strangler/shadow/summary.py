"""A capability's shadow evidence, aggregated from comparison rows (pure: rows and `now` in, summary out).

This one aggregation feeds the gate, the JSON and HTML reports and the CLI table, so they never disagree.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from strangler.shadow.noise import FieldVerdict, classify_fields, is_divergent
from strangler.shadow.store import ComparisonRow


@dataclass
class RouteFieldStat:
    route: str
    field: str
    verdict: FieldVerdict
    expected: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "field": self.field,
            "differed": self.verdict.differed,
            "rate": round(self.verdict.rate, 6),
            "noise_rate": round(self.verdict.noise_rate, 6),
            "noise_samples": self.verdict.noise_samples,
            "classification": "expected" if self.expected else ("noise" if self.verdict.noise else "divergence"),
        }


@dataclass
class CapabilitySummary:
    capability: str
    comparisons: int = 0
    divergent: int = 0
    noise_samples: int = 0
    status_mismatches: int = 0
    mirror_failures: dict[str, int] = field(default_factory=dict)
    fields: list[RouteFieldStat] = field(default_factory=list)
    latency_ms: dict[str, dict[str, float | None]] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)  # match / divergence / missing counts

    @property
    def divergence_rate(self) -> float:
        return self.divergent / self.comparisons if self.comparisons else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "capability": self.capability,
            "comparisons": self.comparisons,
            "divergent": self.divergent,
            "divergence_rate": round(self.divergence_rate, 6),
            "noise_samples": self.noise_samples,
            "status_mismatches": self.status_mismatches,
            "mirror_failures": self.mirror_failures,
            "fields": [f.as_dict() for f in self.fields],
            "latency_ms": self.latency_ms,
            "timeline": self.timeline,
            "outcomes": self.outcomes,
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return round(ordered[index], 3)


def summarize(
    capability: str,
    rows: Sequence[ComparisonRow],
    *,
    expected: Callable[[str], bool] = lambda path: False,
    now: dt.datetime,
    window: dt.timedelta,
    buckets: int = 24,
) -> CapabilitySummary:
    summary = CapabilitySummary(capability)
    compared: Counter[str] = Counter()
    noise_samples: Counter[str] = Counter()
    differed: dict[str, Counter[str]] = defaultdict(Counter)
    noise_differed: dict[str, Counter[str]] = defaultdict(Counter)
    candidates: list[ComparisonRow] = []
    failures: Counter[str] = Counter()
    latency: dict[str, list[float]] = {"legacy": [], "new": []}
    outcomes: Counter[str] = Counter()
    for row in rows:
        if row.kind == "outcome":  # outcome comparisons: their result is in `outcome`
            outcomes[row.outcome] += 1
            continue
        if row.outcome != "compared":
            failures[row.outcome] += 1
            continue
        if row.kind == "noise":
            noise_samples[row.route] += 1
            noise_differed[row.route].update(set(row.fields))
            continue
        candidates.append(row)
        compared[row.route] += 1
        differed[row.route].update(set(row.fields))
        other = "new" if row.serving == "legacy" else "legacy"
        if row.primary_latency_ms is not None:
            latency[row.serving].append(row.primary_latency_ms)
        if row.other_latency_ms is not None:
            latency[other].append(row.other_latency_ms)
    noise_fields: dict[str, set[str]] = {}
    for route in set(compared) | set(noise_samples):
        verdicts = classify_fields(compared[route], differed[route], noise_samples[route], noise_differed[route])
        noise_fields[route] = {name for name, v in verdicts.items() if v.noise or expected(name)}
        for name, verdict in verdicts.items():
            if verdict.differed or verdict.noise_differed:
                summary.fields.append(RouteFieldStat(route, name, verdict, expected(name)))
    summary.fields.sort(key=lambda f: (f.expected or f.verdict.noise, -f.verdict.differed, f.route, f.field))
    start = now - window
    width = window / buckets
    timeline = [[0, 0] for _ in range(buckets)]
    for row in candidates:
        divergent = is_divergent(row.fields, noise_fields.get(row.route, set()))
        summary.comparisons += 1
        summary.divergent += divergent
        summary.status_mismatches += "status" in row.fields
        index = int((row.at - start) / width) if row.at >= start else 0
        slot = timeline[min(buckets - 1, max(0, index))]
        slot[0] += 1
        slot[1] += divergent
    summary.noise_samples = sum(noise_samples.values())
    summary.mirror_failures = dict(failures)
    summary.outcomes = {k: outcomes.get(k, 0) for k in ("match", "divergence", "missing")}
    summary.latency_ms = {
        side: {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99), "count": len(values)}
        for side, values in latency.items()
    }
    summary.timeline = [
        {"start": (start + i * width).isoformat(), "comparisons": n, "divergent": d,
         "rate": round(d / n, 6) if n else None}
        for i, (n, d) in enumerate(timeline)
    ]
    return summary

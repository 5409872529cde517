"""The one aggregation behind the gate and the reports: comparisons, divergence after noise, latencies, timeline."""

from __future__ import annotations

import datetime as dt

from strangler.shadow.store import ComparisonRow
from strangler.shadow.summary import percentile, summarize

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def row(
    *fields: str,
    route: str = "GET /items/{id}",
    kind: str = "candidate",
    outcome: str = "compared",
    serving: str = "legacy",
    at: dt.datetime | None = None,
    latency: tuple[float | None, float | None] = (1.0, 2.0),
) -> ComparisonRow:
    status = (200, 500) if "status" in fields else (200, 200)
    return ComparisonRow(at or NOW - dt.timedelta(minutes=1), "items", route, "GET", kind, outcome, serving,
                         *status, *latency, tuple(fields))


def test_no_rows_no_comparisons() -> None:
    summary = summarize("items", [], now=NOW, window=HOUR)
    assert (summary.comparisons, summary.divergent, summary.divergence_rate) == (0, 0, 0.0)
    assert summary.fields == [] and summary.mirror_failures == {}
    assert summary.latency_ms["legacy"] == {"p50": None, "p99": None, "count": 0}


def test_divergent_comparisons_are_counted_after_noise_removal() -> None:
    rows = [row("/price", "/request_id") for _ in range(10)]  # /price differs always, /request_id too
    rows += [row("/request_id") for _ in range(10)]
    rows += [row("/request_id", kind="noise") for _ in range(5)]  # ... and /request_id differs from itself
    summary = summarize("items", rows, now=NOW, window=HOUR)
    assert (summary.comparisons, summary.divergent, summary.noise_samples) == (20, 10, 5)
    assert summary.divergence_rate == 0.5
    fields = {f.field: f.as_dict() for f in summary.fields}
    assert fields["/price"]["classification"] == "divergence"
    assert (fields["/price"]["rate"], fields["/price"]["noise_rate"]) == (0.5, 0.0)
    assert fields["/request_id"]["classification"] == "noise"
    assert (fields["/request_id"]["rate"], fields["/request_id"]["noise_rate"]) == (1.0, 1.0)
    assert summary.fields[0].field == "/price"  # divergences first, noise after


def test_noise_is_judged_per_route() -> None:
    rows = [row("/v", route="GET /a") for _ in range(10)] + [row("/v", route="GET /b") for _ in range(10)]
    rows += [row("/v", route="GET /a", kind="noise") for _ in range(10)]  # /v is noisy on GET /a only
    summary = summarize("items", rows, now=NOW, window=HOUR)
    assert summary.divergent == 10
    verdicts = {(f.route, f.field): f.as_dict()["classification"] for f in summary.fields}
    assert verdicts == {("GET /a", "/v"): "noise", ("GET /b", "/v"): "divergence"}


def test_expected_differences_are_excluded() -> None:
    rows = [row("/new_field") for _ in range(4)] + [row("/new_field", "/name")]
    summary = summarize("items", rows, expected=lambda path: path == "/new_field", now=NOW, window=HOUR)
    assert (summary.comparisons, summary.divergent) == (5, 1)
    classes = {f.field: f.as_dict()["classification"] for f in summary.fields}
    assert classes == {"/new_field": "expected", "/name": "divergence"}


def test_status_mismatches_are_counted_and_never_noise() -> None:
    rows = [row("status") for _ in range(3)] + [row() for _ in range(7)]
    rows += [row("status", kind="noise") for _ in range(3)]
    summary = summarize("items", rows, now=NOW, window=HOUR)
    assert (summary.status_mismatches, summary.divergent) == (3, 3)


def test_failed_mirrors_are_not_comparisons_but_are_counted() -> None:
    rows = [row(), row(outcome="timeout"), row(outcome="timeout"), row(outcome="error"),
            row(outcome="dropped"), row(outcome="too_large", kind="noise")]
    summary = summarize("items", rows, now=NOW, window=HOUR)
    assert summary.comparisons == 1
    assert summary.mirror_failures == {"timeout": 2, "error": 1, "dropped": 1, "too_large": 1}


def test_latency_percentiles_per_side() -> None:
    rows = [row(latency=(float(i), float(10 * i))) for i in range(1, 102)]
    rows.append(row(latency=(None, None)))
    summary = summarize("items", rows, now=NOW, window=HOUR)
    assert summary.latency_ms["legacy"] == {"p50": 51.0, "p99": 100.0, "count": 101}
    assert summary.latency_ms["new"] == {"p50": 510.0, "p99": 1000.0, "count": 101}


def test_latency_sides_follow_the_serving_side() -> None:
    rows = [row(serving="new", latency=(3.0, 7.0))]  # mode new: new answered, legacy was mirrored
    summary = summarize("items", rows, now=NOW, window=HOUR)
    assert summary.latency_ms["new"]["p50"] == 3.0 and summary.latency_ms["legacy"]["p50"] == 7.0


def test_percentile() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.99) == 5.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(1, 11)], 0.0) == 1.0
    assert percentile([float(i) for i in range(1, 11)], 1.0) == 10.0


def test_timeline_buckets_the_window() -> None:
    rows = [row(at=NOW - dt.timedelta(minutes=55)), row("/a", at=NOW - dt.timedelta(minutes=55)),
            row("/a", at=NOW - dt.timedelta(minutes=1)), row(at=NOW - dt.timedelta(minutes=1))]
    rows += [row(at=NOW - dt.timedelta(minutes=1)) for _ in range(2)]
    summary = summarize("items", rows, now=NOW, window=HOUR, buckets=12)
    timeline = summary.timeline
    assert len(timeline) == 12
    assert timeline[0]["start"] == (NOW - HOUR).isoformat()
    assert (timeline[1]["comparisons"], timeline[1]["divergent"], timeline[1]["rate"]) == (2, 1, 0.5)
    assert (timeline[11]["comparisons"], timeline[11]["divergent"], timeline[11]["rate"]) == (4, 1, 0.25)
    assert all(b["rate"] is None for i, b in enumerate(timeline) if i not in (1, 11))
    assert sum(b["comparisons"] for b in timeline) == summary.comparisons


def test_as_dict_is_plain_data() -> None:
    summary = summarize("items", [row("/a")], now=NOW, window=HOUR)
    data = summary.as_dict()
    assert data["capability"] == "items" and data["divergence_rate"] == 1.0
    assert data["fields"] == [{"route": "GET /items/{id}", "field": "/a", "differed": 1, "rate": 1.0,
                               "noise_rate": 0.0, "noise_samples": 0, "classification": "divergence"}]

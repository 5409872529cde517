"""Reports and metrics built from a fake divergence store: JSON, HTML (self-contained, escaped), gate verdicts."""

from __future__ import annotations

import asyncio
import datetime as dt
import re

from prometheus_client import CollectorRegistry

from strangler.routing.config import CapabilityConfig
from strangler.shadow.compare import FieldDifference
from strangler.shadow.evidence import ShadowEvidence
from strangler.shadow.metrics import ShadowMetrics
from strangler.shadow.records import ComparisonRecord
from strangler.shadow.report import build_report, render_html
from tests.shadow.fakes import FakeDivergenceStore

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def evidence(records: list[ComparisonRecord], min_samples: int = 3) -> ShadowEvidence:
    store = FakeDivergenceStore()
    store.record(records)
    cap = CapabilityConfig.model_validate({"legacy": "l", "new": "n", "routes": ["GET /items/{id}"],
                                           "gate": {"min_samples": min_samples, "max_divergence_rate": 0.2}})
    return ShadowEvidence(store, {"items": cap}, lambda: NOW)


def record(i: int, *diffs: FieldDifference, outcome: str = "compared") -> ComparisonRecord:
    return ComparisonRecord(NOW - dt.timedelta(minutes=i), "items", "GET /items/{id}", "GET", "candidate", outcome,
                            f"cid-{i}", "legacy", 200, 200, 1.0 + i, 2.0 + i, diffs, ("regression",) * len(diffs))


def test_the_report_has_rates_examples_and_the_gate_verdict() -> None:
    diff = FieldDifference("/price", 10, 12)
    data = build_report(evidence([record(1, diff), *[record(i) for i in range(2, 10)], record(10, outcome="timeout")]))
    [cap] = data["capabilities"]
    assert (cap["comparisons"], cap["divergent"], cap["mirror_failures"]) == (9, 1, {"timeout": 1})
    [price] = cap["fields"]
    assert (price["field"], round(price["rate"], 3), price["classification"]) == ("/price", 0.111, "divergence")
    assert [(e["primary_value"], e["other_value"], e["correlation_id"]) for e in price["examples"]] == [
        (10, 12, "cid-1")]
    assert cap["gate"]["passes"] is True and cap["gate"]["min_samples"] == 3
    assert data["generated_at"] == NOW.isoformat()


def test_the_gate_is_not_met_without_enough_samples() -> None:
    data = build_report(evidence([record(1)], min_samples=3))
    gate = data["capabilities"][0]["gate"]
    assert gate["passes"] is False and "1 samples < 3 required" in gate["explanation"]


def test_the_html_report_is_self_contained_and_escapes_what_the_services_sent() -> None:
    hostile = FieldDifference("/bio", "<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
    page = render_html(build_report(evidence([record(1, hostile), record(2)])))
    assert "<script>alert" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&#34;&gt;&lt;img src=x" in page
    assert "/bio" in page and "50.00%" in page and "<svg" in page
    plain = render_html(build_report(evidence([record(1, FieldDifference("/a", 1, 2)), record(2)])))
    assert not re.search(r"https?://|\bsrc\s*=|\bhref\s*=|@import|url\(", plain, re.I)  # nothing to fetch


def test_field_metrics_have_bounded_cardinality() -> None:
    registry = CollectorRegistry()
    metrics = ShadowMetrics(registry, max_fields=2)
    for fields in (["/a"], ["/b", "/a"], ["/c"], ["/d", "/a"], []):
        metrics.compared("items", fields)

    def value(field: str) -> float | None:
        return registry.get_sample_value("strangler_shadow_field_divergences_total",
                                         {"capability": "items", "field": field})

    assert (value("/a"), value("/b"), value("other"), value("/c")) == (3, 1, 2, None)
    assert registry.get_sample_value("strangler_shadow_compared_total", {"capability": "items"}) == 5
    assert registry.get_sample_value("strangler_shadow_divergent_total", {"capability": "items"}) == 4


async def test_counts_are_summed_then_written_together_and_at_stop() -> None:
    registry = CollectorRegistry()
    metrics = ShadowMetrics(registry, flush_interval=3600)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"strangler_shadow_{name}_total", {"capability": "items", **labels})

    for _ in range(3):
        metrics.mirrored("items")
        metrics.compared("items", ["/a"])
    metrics.failed("items", "timeout")
    assert value("mirrored") in (None, 0.0)  # summed in the process: not written yet
    metrics.flush()
    assert (value("mirrored"), value("compared"), value("divergent"), value("failed", reason="timeout"),
            value("field_divergences", field="/a")) == (3, 3, 3, 1, 3)
    metrics.dropped("items")
    metrics.skipped("items", "too_large")
    await metrics.stop()  # the process's lifecycle writes what is left
    assert (value("dropped"), value("skipped", reason="too_large"), value("mirrored")) == (1, 1, 3)


async def test_counts_reach_the_metric_values_within_the_flush_interval() -> None:
    registry = CollectorRegistry()
    metrics = ShadowMetrics(registry, flush_interval=0.01)
    metrics.mirrored("items")
    while registry.get_sample_value("strangler_shadow_mirrored_total", {"capability": "items"}) != 1:
        await asyncio.sleep(0.005)  # the test's own timeout ends it if the timer never writes
    metrics.mirrored("items")  # a new timer for the next counts
    while registry.get_sample_value("strangler_shadow_mirrored_total", {"capability": "items"}) != 2:
        await asyncio.sleep(0.005)

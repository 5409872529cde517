"""The divergence report: per capability, what was compared, what diverged (after noise), and whether the
gate would pass. One builder, three renderings: JSON, a rich table, and a self-contained HTML page."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from importlib.resources import files
from typing import Any

from strangler.routing.gate import Evidence, judge_change
from strangler.routing.modes import Mode, RoutingFlag
from strangler.shadow.evidence import ShadowEvidence

EXAMPLES_PER_FIELD = 3


def build_report(evidence: ShadowEvidence, capabilities: Iterable[str] | None = None) -> dict[str, Any]:
    names = list(capabilities) if capabilities is not None else list(evidence.capabilities)
    out = []
    for name in names:
        cap = evidence.capabilities[name]
        summary = evidence.summary(name)
        data = summary.as_dict()
        examples: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in evidence.store.divergences(name, limit=1000):
            if row.get("source") == "body":  # whole bodies (store_bodies) are listed by /divergences only
                continue
            key = (str(row["route"]), str(row["field"]))
            if len(examples[key]) < EXAMPLES_PER_FIELD:
                examples[key].append({k: row[k] for k in ("at", "correlation_id", "primary_value", "other_value",
                                                           "classification", "primary_status", "other_status")})
        for item in data["fields"]:
            item["examples"] = examples.get((item["route"], item["field"]), [])
        # would a gated step forward (past shadow) pass? the gate is the same for every gated step
        decision = judge_change(RoutingFlag(Mode.SHADOW), Mode.NEW, 0.0, cap.gate,
                                Evidence(summary.comparisons, summary.divergent), force=False)
        data["gate"] = {
            "min_samples": cap.gate.min_samples,
            "max_divergence_rate": cap.gate.max_divergence_rate,
            "window_seconds": cap.gate.window,
            "passes": decision.allowed,
            "explanation": decision.explanation,
        }
        out.append(data)
    return {"generated_at": evidence.clock().isoformat(), "capabilities": out}


def render_html(report: dict[str, Any]) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["pct"] = lambda v: "-" if v is None else f"{100 * v:.2f}%"
    env.filters["short"] = _short
    env.filters["age"] = _age
    template = env.from_string((files("strangler.shadow") / "templates" / "report.html").read_text("utf-8"))
    return template.render(report={"drift": [], **report}, chart=_chart)


def render_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for cap in report["capabilities"]:
        gate = cap["gate"]
        status = "[green]passes[/]" if gate["passes"] else "[red]not met[/]"
        console.print(f"\n[bold]{cap['capability']}[/]: {cap['comparisons']} comparisons, "
                      f"{cap['divergent']} divergent ({100 * cap['divergence_rate']:.2f}% after noise), "
                      f"{cap['status_mismatches']} status mismatches, noise samples {cap['noise_samples']}; "
                      f"gate {status} ({gate['explanation']})")
        lat = cap["latency_ms"]
        console.print(f"latency ms legacy p50 {lat['legacy']['p50']} p99 {lat['legacy']['p99']} | "
                      f"new p50 {lat['new']['p50']} p99 {lat['new']['p99']}; mirror failures {cap['mirror_failures']}")
        if not cap["fields"]:
            continue
        table = Table()
        for column in ("route", "field", "rate", "noise rate", "class", "example (serving / other)"):
            table.add_column(column)
        for item in cap["fields"][:20]:
            ex = item["examples"][0] if item["examples"] else None
            example = f"{_short(ex['primary_value'])} / {_short(ex['other_value'])}" if ex else "-"
            table.add_row(item["route"], item["field"], f"{100 * item['rate']:.2f}%",
                          f"{100 * item['noise_rate']:.2f}%", item["classification"], example)
        console.print(table)


def _age(seconds: float) -> str:
    from strangler.reconcile.report import format_age  # the drift table's wording

    return format_age(seconds)


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chart(timeline: list[dict[str, Any]], width: int = 480, height: int = 80) -> str:
    """An inline SVG polyline of the divergence rate per time bucket (gaps where nothing was compared)."""
    if not timeline:
        return ""
    step = width / max(1, len(timeline) - 1)
    points = []
    for i, bucket in enumerate(timeline):
        if bucket["rate"] is not None:
            points.append(f"{i * step:.1f},{height - 4 - bucket['rate'] * (height - 8):.1f}")
    dots = "".join(f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2"/>' for p in points)
    line = f'<polyline fill="none" stroke="#c0392b" stroke-width="2" points="{" ".join(points)}"/>' if points else ""
    return (f'<svg role="img" aria-label="divergence rate over time" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}"><rect width="{width}" height="{height}" fill="#fafafa" '
            f'stroke="#ddd"/>{line}<g fill="#c0392b">{dots}</g></svg>')


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)

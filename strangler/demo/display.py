"""How the demo shows itself on a terminal (rich): the set-up, each step's exchanges, the evidence, the
events and the ledger. Laid out to read in an 80-column terminal."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from strangler.demo.scenario import Exchange
from strangler.demo.stack import CONFIG_RESOURCE, DemoStack

_STYLE_OF_APP = {"legacy": "yellow", "new-customers": "green"}
_DEFAULT = "(default)"


def _table() -> Table:
    return Table(box=None, show_header=False, padding=(0, 1, 0, 2))


def render_setup(console: Console, stack: DemoStack) -> None:
    config = stack.config
    console.rule("[bold]Strangler demo[/bold]")
    console.print("A gateway in front of a sample legacy monolith (an insurer's customers and policies) and a "
                  "sample new customer service, each with its own SQLite database, all on loopback.")
    servers = _table()
    servers.add_row("gateway", stack.gateway_url, "the proxy")
    servers.add_row("admin API", stack.admin_url, "flags, reports, ledger, dashboard")
    servers.add_row("legacy", stack.legacy_url, "upstream 'legacy'")
    servers.add_row("new service", stack.new_service_url, "upstream 'customers'")
    servers.add_row("CDC", "legacy.sqlite", "-> changes.jsonl -> domain events")
    console.print(servers)
    console.print(f"Capabilities (strangler/demo/{CONFIG_RESOURCE}):")
    capabilities = _table()
    for name, cap in config.capabilities.items():
        sides = f"{cap.legacy} -> {cap.new}" if cap.new else f"{cap.legacy} only"
        capabilities.add_row(name, sides, "\n".join(cap.routes))
    capabilities.add_row("anything else", f"{config.default_upstream}", "(the default upstream)")
    console.print(capabilities)


def render_step(console: Console, title: str, summary: str) -> None:
    console.print()
    console.rule(f"[bold]{title}[/bold]", align="left")
    console.print(summary)


def render_flip(console: Console, body: Mapping[str, Any], status: int, answer: Mapping[str, Any]) -> None:
    shown = ", ".join(f"{k}: {json.dumps(v)}" for k, v in body.items())
    line = Text(f"  PUT /flags/customer-profile {{{shown}}} -> ")
    line.append(str(status), style="green" if status == 200 else "bold red")
    if status == 200:
        line.append(f"  mode {answer['mode']}, version {answer['version']}")
    console.print(line)


def render_exchanges(console: Console, exchanges: Sequence[Exchange]) -> None:
    if not exchanges:
        return
    request_width = max(len(ex.step.request_line) for ex in exchanges)
    capability_width = max(len(ex.capability or _DEFAULT) for ex in exchanges)
    header = f"  {'request':<{request_width}}  {'capability':<{capability_width}}  {'served by':<13}  status"
    console.print(Text(header, style="bold"))
    notes: list[str] = []
    for ex in exchanges:
        line = Text("  ")
        line.append(f"{ex.step.request_line:<{request_width}}  ")
        line.append(f"{ex.capability or _DEFAULT:<{capability_width}}  ", style="" if ex.capability else "dim")
        served = ex.served_by or "-"
        line.append(f"{served:<13}  ", style=_STYLE_OF_APP.get(served, "red"))
        line.append(str(ex.status), style="green" if ex.status < 400 else "red")
        line.append("  ok" if ex.ok else "  FAILED", style="green" if ex.ok else "bold red")
        if ex.step.note:
            notes.append(ex.step.note)
            line.append(f"  [{len(notes)}]", style="bold")
        console.print(line, no_wrap=True, overflow="ellipsis")
        detail = Text(ex.excerpt)
        detail.append(f"\ncorrelation id {ex.correlation_id or '-'}", style="dim")
        for problem in ex.problems:
            detail.append(f"\n{problem}", style="bold red")
        console.print(Padding(detail, (0, 0, 0, 6), expand=False))
    for i, note in enumerate(notes, 1):
        console.print(Padding(Text(f"[{i}] {note}", style="italic"), (0, 0, 0, 2), expand=False))


def render_traffic(console: Console, count: int, served: Mapping[str, int]) -> None:
    split = ", ".join(f"{n} by {app}" for app, n in sorted(served.items()))
    console.print(f"  {count} more GET /customers/{{1,2,3}} through the gateway: answered {split}")


def render_report(console: Console, report: Mapping[str, Any]) -> None:
    gate = report["gate"]
    verdict = "[green]gate met[/green]" if gate["passes"] else "[red]gate not met[/red]"
    console.print(f"  Divergence report (GET /report): {report['comparisons']} comparisons, {report['divergent']} "
                  f"divergent = {100 * report['divergence_rate']:.1f}% after noise removal, "
                  f"{report['noise_samples']} noise samples; {verdict} "
                  f"(min {gate['min_samples']} samples, max {100 * gate['max_divergence_rate']:g}%)")
    table = Table(box=None, padding=(0, 1, 0, 2))
    for column in ("field", "rate", "noise rate", "class", "example (legacy / new)"):
        table.add_column(column, no_wrap=column != "example (legacy / new)")
    for field in report["fields"][:6]:
        example = field["examples"][0] if field["examples"] else None
        shown = f"{_short(example['primary_value'])} / {_short(example['other_value'])}" if example else "-"
        style = "red" if field["classification"] == "divergence" else "dim"
        table.add_row(field["field"], f"{100 * field['rate']:.1f}%", f"{100 * field['noise_rate']:.1f}%",
                      Text(field["classification"], style=style), shown)
    if report["fields"]:
        console.print(table)


def render_refusal(console: Console, answer: Mapping[str, Any]) -> None:
    evidence = answer.get("evidence", {})
    console.print(f"  [bold red]412 {answer.get('title')}[/bold red]: {answer.get('detail')}")
    console.print(f"  evidence: {evidence.get('samples')} samples (gate needs {evidence.get('min_samples')}), "
                  f"{evidence.get('divergent')} divergent = {100 * float(evidence.get('rate', 0)):.1f}% "
                  f"(gate allows {100 * float(evidence.get('max_divergence_rate', 0)):g}%)", highlight=False)


def render_events(console: Console, legacy: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> None:
    table = Table(box=None, padding=(0, 1, 0, 2))
    for column in ("source", "event", "customer", "address", "correlation id"):
        table.add_column(column, no_wrap=column != "address")
    for event in [*legacy, *new]:
        payload = event["payload"]
        table.add_row(event["source"], event["event_type"], event["aggregate_id"],
                      f"{payload['street']}, {payload['city']}", _short_id(event.get("correlation_id")))
    console.print(table)


def _short_id(correlation_id: str | None) -> str:
    """The end of a correlation id: a gateway's ids share their beginning (a per-process prefix, then a
    counter), so the end is what tells them apart."""
    return "…" + correlation_id[-12:] if correlation_id else "-"


def render_ledger(console: Console, change: Mapping[str, Any]) -> None:
    console.print(f"  GET /changes/{change.get('correlation_id')}: stage [bold]{change.get('stage')}[/bold], "
                  f"trusted: {change.get('trusted')}", highlight=False)
    for item in change.get("changes", []):
        stages = item["stages"]
        start = stages.get("accepted")
        parts = []
        for stage, at in stages.items():
            parts.append(stage if start is None or stage == "accepted" else f"{stage} +{_ms(start, at)}")
        console.print(f"    customer {item['entity_key']}: " + " -> ".join(parts), highlight=False)


def render_history(console: Console, history: Sequence[Mapping[str, Any]]) -> None:
    for entry in reversed(history):
        frm, to = entry["from"], entry["to"]
        forced = " [red](forced)[/red]" if entry["forced"] else ""
        console.print(f"  v{entry['version']} {frm['mode']} -> {to['mode']}"
                      f"{' ' + format(to['percent'], 'g') + '%' if to['mode'] == 'canary' else ''} by "
                      f"{entry['actor']}{forced}: {entry['reason']}", highlight=False)


def render_serving(console: Console, stack: DemoStack) -> None:
    console.print()
    console.rule("[bold]Serving[/bold]", align="left")
    urls = _table()
    urls.add_row("gateway", stack.gateway_url)
    urls.add_row("dashboard", f"{stack.admin_url}/dashboard/")
    urls.add_row("admin token", stack.token)
    urls.add_row("legacy", stack.legacy_url)
    urls.add_row("new service", stack.new_service_url)
    urls.add_row("files", str(stack.workdir))
    console.print(urls)
    console.print(f"Open the dashboard URL in a browser and sign in with the admin token. Try:\n"
                  f"  curl -i {stack.gateway_url}/customers/3\n"
                  f"  curl -H 'authorization: Bearer {stack.token}' {stack.admin_url}/report", highlight=False,
                  soft_wrap=True)
    console.print("Press Ctrl-C to stop.")


def _short(value: Any, limit: int = 30) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ms(start: str, at: str) -> str:
    from datetime import datetime

    delta = datetime.fromisoformat(at) - datetime.fromisoformat(start)
    return f"{delta.total_seconds() * 1000:.0f} ms"

"""How the demo shows itself on a terminal (rich): the set-up, each phase's exchanges, the outcome.

Laid out to read in an 80-column terminal: one line per request, its response and correlation id below.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from strangler.demo.scenario import Exchange, Phase
from strangler.demo.stack import CONFIG_RESOURCE, DemoStack

_STYLE_OF_APP = {"legacy": "yellow", "new-customers": "green"}
_DEFAULT = "(default)"


def render_setup(console: Console, stack: DemoStack) -> None:
    config = stack.proxy.config
    console.rule("[bold]Strangler demo[/bold]")
    console.print(
        "A gateway in front of a sample legacy monolith and a sample new customer service, each with its own "
        "SQLite database, all on loopback."
    )
    servers = Table(box=None, show_header=False, padding=(0, 1, 0, 2))
    servers.add_row("gateway", stack.gateway_url, "")
    servers.add_row("legacy", stack.legacy_url, "upstream 'legacy'")
    servers.add_row("new service", stack.new_service_url, "upstream 'customers'")
    console.print(servers)
    console.print(f"Capabilities (strangler/demo/{CONFIG_RESOURCE}):")
    capabilities = Table(box=None, show_header=False, padding=(0, 1, 0, 2))
    for name, cap in config.capabilities.items():
        sides = f"{cap.legacy} -> {cap.new}" if cap.new else f"{cap.legacy} only"
        capabilities.add_row(name, sides, "\n".join(cap.routes))
    capabilities.add_row("anything else", f"{config.default_upstream}", "(the default upstream)")
    console.print(capabilities)


def render_phase(console: Console, phase: Phase, exchanges: Sequence[Exchange]) -> None:
    console.print()
    console.rule(f"[bold]{phase.title}[/bold]", align="left")
    modes = ", ".join(f"{cap} = {mode.value}" for cap, mode in phase.modes.items())
    console.print(f"{phase.summary} [dim](flags: {modes})[/dim]")
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


def render_outcome(console: Console, exchanges: Sequence[Exchange]) -> None:
    failed = [ex for ex in exchanges if not ex.ok]
    console.print()
    if failed:
        console.print(f"[bold red]{len(failed)} of {len(exchanges)} exchanges did not go as expected.[/bold red]")
    else:
        console.print(
            f"[bold green]All {len(exchanges)} exchanges went as expected:[/bold green] each answer came from the "
            "upstream its capability's mode chose, and every response carried a correlation id."
        )


def render_serving(console: Console, stack: DemoStack) -> None:
    flags = ", ".join(f"{cap} = {stack.flags.flag(cap).mode.value}" for cap in stack.proxy.config.capabilities)
    console.print()
    console.rule("[bold]Serving[/bold]", align="left")
    urls = Table(box=None, show_header=False, padding=(0, 1, 0, 2))
    urls.add_row("gateway", stack.gateway_url)
    urls.add_row("legacy", stack.legacy_url)
    urls.add_row("new service", stack.new_service_url)
    urls.add_row("databases", f"{stack.legacy_db}\n{stack.new_service_db}")
    urls.add_row("flags", flags)
    console.print(urls)
    console.print(f"Try:  curl -i {stack.gateway_url}/customers/3", highlight=False, soft_wrap=True)
    console.print(
        f"      curl -i -X PUT {stack.gateway_url}/customers/3/address -H 'content-type: application/json' "
        """-d '{"street": "Rua Nova 1", "postcode": "1200-001", "city": "Lisboa", "country": "PT"}'""",
        highlight=False, soft_wrap=True,
    )
    console.print("Press Ctrl-C to stop.")

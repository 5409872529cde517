"""The live status line of `strangler cdc run`: one line per connector (phase, events/s, lag, health), with a
progress bar while a snapshot runs. Plain log lines every 10 s when standard error is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from strangler.cdc.connector import Connector


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class StatusDisplay:
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._live: Live | None = None
        self._previous: dict[str, tuple[float, int]] = {}
        self._rates: dict[str, float] = {}
        self._last_plain = 0.0

    def __call__(self, connectors: list[Connector], final: bool) -> None:
        now = time.monotonic()
        for c in connectors:
            then, count = self._previous.get(c.name, (now, c.acknowledged))
            if now - then >= 1.0:
                self._rates[c.name] = (c.acknowledged - count) / (now - then)
                self._previous[c.name] = (now, c.acknowledged)
            else:
                self._previous.setdefault(c.name, (now, c.acknowledged))
        if not self.console.is_terminal:
            if final or now - self._last_plain >= 10:
                self._last_plain = now
                for c in connectors:
                    print(self._line(c).plain, file=sys.stderr, flush=True)
            return
        if self._live is None:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.start()
        self._live.update(self._render(connectors))
        if final:
            self._live.stop()
            self._live = None

    def _line(self, c: Connector) -> Text:
        health = Text("ok", style="green") if c.healthy else Text(f"unhealthy: {c.reason}", style="red")
        if c.phase in ("done", "stopped"):
            health = Text(c.phase, style="cyan")
        lag = f"lag {c.lag_seconds:.1f} s" + (f" {_size(c.lag_bytes)}" if c.lag_bytes is not None else "")
        return Text.assemble(
            (f"{c.name} ", "bold"), f"{c.phase} ", f"{c.acknowledged:,} events ",
            f"{self._rates.get(c.name, 0.0):,.0f}/s ", f"{lag} ", f"in flight {c.in_flight} ",
            f"dup {c.duplicates} ", health,
        )

    def _render(self, connectors: list[Connector]) -> Any:
        rows: list[Any] = []
        for c in connectors:
            rows.append(self._line(c))
            snap: dict[str, Any] = c.snapshot
            if c.phase == "snapshot" and snap.get("total"):
                grid = Table.grid(padding=(0, 1))
                grid.add_row(Text(f"  snapshot {snap.get('table') or ''}"),
                             ProgressBar(total=max(snap["total"], snap["rows"]), completed=snap["rows"], width=40),
                             Text(f"{snap['rows']:,} / ~{snap['total']:,} rows"))
                rows.append(grid)
        return Group(*rows)

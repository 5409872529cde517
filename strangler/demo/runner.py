"""`strangler demo`: start everything, walk customer-profile from legacy through shadow, a refused promotion,
a fix, canary and new, then show what to look at. With `serve`, everything keeps running afterwards (the
dashboard's URL is printed, nothing is opened) until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from strangler.demo import display
from strangler.demo.errors import DemoFailed
from strangler.demo.scenario import CAPABILITY, Exchange, Step, change_flag, drive, journey, report, run_step
from strangler.demo.stack import DemoStack, run_stack

EXIT_OK = 0
EXIT_FAILED = 1
MOVED = {"street": "Prinsengracht 263", "postcode": "1016 GV", "city": "Amsterdam", "country": "NL"}
MOVED_TOO = {"street": "Torstrasse 49", "postcode": "10119", "city": "Berlin", "country": "DE"}
MOVED_AGAIN = {"street": "Mariahilfer Strasse 1", "postcode": "1060", "city": "Wien", "country": "AT"}
MOVED_LAST = {"street": "Rua do Ouro 12", "postcode": "1100-060", "city": "Lisboa", "country": "PT"}
ADDRESS = ("correspondence_address",)
NAME = ("full_name", "email")
SHADOW_TRAFFIC = 60
AFTER_FIX_TRAFFIC = 500


def run_demo(*, serve: bool = False, console: Console | None = None) -> int:
    """Run the demo; 0 when everything went as expected, 1 otherwise."""
    console = console or Console(highlight=False)
    with tempfile.TemporaryDirectory(prefix="strangler-demo-") as workdir, _quiet():
        try:
            return asyncio.run(_demo(Path(workdir), serve=serve, console=console))
        except (DemoFailed, httpx.HTTPError, TimeoutError) as exc:
            console.print(f"[bold red]demo failed:[/bold red] {exc}", highlight=False)
            return EXIT_FAILED


async def _demo(workdir: Path, *, serve: bool, console: Console) -> int:
    async with run_stack(workdir) as stack:
        display.render_setup(console, stack)
        async with (httpx.AsyncClient(base_url=stack.gateway_url, timeout=10.0, trust_env=False) as gateway,
                    httpx.AsyncClient(base_url=stack.admin_url, timeout=10.0, trust_env=False,
                                      headers={"authorization": f"Bearer {stack.token}"}) as admin):
            story = Story(stack, console, gateway, admin)
            await story.tell()
        story.conclude()
        if serve:
            display.render_serving(console, stack)
            await _until_stop_signal()
            console.print("Stopping.")
    return EXIT_OK if story.ok else EXIT_FAILED


class Story:
    def __init__(self, stack: DemoStack, console: Console, gateway: httpx.AsyncClient,
                 admin: httpx.AsyncClient) -> None:
        self.stack = stack
        self.console = console
        self.gateway = gateway
        self.admin = admin
        self.exchanges: list[Exchange] = []
        self.problems: list[str] = []
        self.served: dict[str, Counter[str]] = {}

    @property
    def ok(self) -> bool:
        return not self.problems and all(ex.ok for ex in self.exchanges)

    async def send(self, phase: str, *steps: Step) -> list[Exchange]:
        done = [await run_step(self.gateway, self.stack.proxy.router, step) for step in steps]
        display.render_exchanges(self.console, done)
        self.exchanges.extend(done)
        for ex in done:
            self.served.setdefault(phase, Counter())[ex.served_by or "-"] += 1
        return done

    async def traffic(self, phase: str, count: int) -> None:
        paths = [f"/customers/{1 + i % 3}" for i in range(count)]
        served = await drive(self.gateway, paths)
        self.served.setdefault(phase, Counter()).update(served)
        display.render_traffic(self.console, count, served)

    async def flip(self, body: dict[str, Any], expect: int = 200) -> dict[str, Any]:
        response = await change_flag(self.stack, self.admin, body)
        answer: dict[str, Any] = response.json()
        display.render_flip(self.console, body, response.status_code, answer)
        if response.status_code != expect:
            self.problems.append(f"PUT /flags answered {response.status_code}, expected {expect}: {answer}")
        return answer

    def expect(self, condition: bool, problem: str) -> None:
        if not condition:
            self.problems.append(problem)
            self.console.print(f"  [bold red]unexpected:[/bold red] {problem}")

    async def tell(self) -> None:
        c, relay = self.console, self.stack.relay
        display.render_step(c, "1. legacy: the monolith answers everything",
                            "Flag customer-profile = legacy (its configured mode). Every request goes to legacy; "
                            "legacy's address change is captured from its database (SQLite triggers), mapped to a "
                            "domain event, and the new service updates its own store from it.")
        (_, legacy_put, *_) = await self.send(
            "legacy", Step("GET", "/customers/1", focus=NAME),
            Step("PUT", "/customers/1/address", body=MOVED, expect={"correspondence_address": MOVED}, focus=ADDRESS),
            Step("GET", "/policies/501", focus=("policy_number", "premium")), Step("GET", "/branches"))
        await relay.settle()
        self.expect(len(relay.legacy_events) == 1, f"{len(relay.legacy_events)} legacy domain events, expected 1")

        display.render_step(c, "2. shadow: legacy answers, the new service gets a copy, both are compared",
                            "Entering shadow changes nothing for clients and is how the evidence is gathered, so it "
                            "is not gated (the audit log still records it); every later step forward is.")
        await self.flip({"mode": "shadow", "reason": "start comparing; legacy keeps answering"})
        (_, shadow_put, _) = await self.send(
            "shadow", Step("GET", "/customers/1", focus=NAME),
            Step("PUT", "/customers/2/address", body=MOVED_TOO, expect={"correspondence_address": MOVED_TOO},
                 focus=ADDRESS, note="writes are mirrored as they are (shadow.writes: mirror): the new service "
                                     "has its own store"),
            Step("GET", "/customers/2", focus=ADDRESS))
        await self.traffic("shadow", SHADOW_TRAFFIC)
        await relay.settle()
        first = await report(self.admin, at_least=SHADOW_TRAFFIC)
        display.render_report(c, first)
        fields = {f["field"]: f for f in first["fields"]}
        self.expect(fields.get("/full_name", {}).get("classification") == "divergence",
                    "the report does not show /full_name diverging")
        self.expect(fields.get("/generated_at", {}).get("classification") == "noise",
                    "the report does not show /generated_at as noise")

        display.render_step(c, "3. a promotion refused: the gate reads the evidence",
                            "Asking for canary at 50% while a third of the comparisons diverge:")
        refused = await self.flip({"mode": "canary", "percent": 50, "reason": "looks fine to me"}, expect=412)
        display.render_refusal(c, refused)

        display.render_step(c, "4. the difference fixed",
                            "Release 2 of the new service stops title-casing names ('Maria van den Berg', not "
                            f"'Maria Van Den Berg'). Shadow traffic goes on; {AFTER_FIX_TRAFFIC} more comparisons "
                            "bring the rate over the gate's window under its maximum.")
        self.stack.release.version = 2
        await self.traffic("shadow after the fix", AFTER_FIX_TRAFFIC)
        fixed = await report(self.admin, at_least=first["comparisons"] + AFTER_FIX_TRAFFIC)
        display.render_report(c, fixed)
        self.expect(fixed["gate"]["passes"], f"the gate still fails after the fix: {fixed['gate']['explanation']}")

        display.render_step(c, "5. canary: half of the customers go to the new service",
                            "Sticky by customer id (path:id): a customer always lands on the same side. The change "
                            "names the version it expects, so a concurrent change would be refused (409).")
        version = (await self.admin.get(f"/flags/{CAPABILITY}/history")).json()["history"][0]["version"]
        await self.flip({"mode": "canary", "percent": 50, "reason": "shadow clean after release 2",
                         "expected_version": version})
        await self.send(
            "canary", Step("GET", "/customers/1", focus=NAME), Step("GET", "/customers/2", focus=NAME),
            Step("GET", "/customers/3", focus=NAME),
            Step("PUT", "/customers/2/address", body=MOVED_AGAIN, expect={"correspondence_address": MOVED_AGAIN},
                 focus=ADDRESS, note="customer 2 is on the new side: the new service answers, legacy gets the copy"))

        display.render_step(c, "6. new: the new service answers, legacy still gets a copy (reverse shadow)",
                            "Moving back to legacy stays possible at once. Customer 1's phase-1 move reached the new "
                            "service's store through change data capture.")
        await self.flip({"mode": "new", "reason": "canary clean at 50%"})
        (_, new_put, _) = await self.send(
            "new", Step("GET", "/customers/1", expect={"correspondence_address": MOVED, "full_name":
                                                       "Maria van den Berg"}, focus=("full_name", *ADDRESS)),
            Step("PUT", "/customers/3/address", body=MOVED_LAST, expect={"correspondence_address": MOVED_LAST},
                 focus=ADDRESS),
            Step("GET", "/policies/503", focus=("policy_number", "premium")))
        await relay.settle()

        display.render_step(c, "What to look at", "")
        c.print("[bold]Where requests went[/bold]")
        for phase, served in self.served.items():
            split = ", ".join(f"{n} {app}" for app, n in sorted(served.items()))
            c.print(f"  {phase:<22} {split}")
        c.print("[bold]The divergence report[/bold] (GET /report, strangler report, the dashboard)")
        display.render_report(c, await report(self.admin))
        c.print("[bold]Domain events[/bold] (legacy's from its change log via CDC; the new service's own)")
        display.render_events(c, relay.legacy_events, relay.new_events)
        # legacy: phases 1, 2 (served), 5 and 6 (mirrored); new: phase 2 (mirrored), 5 and 6 (served)
        self.expect(len(relay.legacy_events) == 4, f"{len(relay.legacy_events)} legacy domain events, expected 4")
        self.expect(len(relay.new_events) == 3, f"{len(relay.new_events)} events of the new service, expected 3")
        c.print("[bold]The maturity ledger[/bold] (may a caller trust a change yet?)")
        for exchange, until, why in ((legacy_put, "propagated", "phase 1, legacy only: nothing to compare"),
                                     (shadow_put, "reconciled", "phase 2, shadow: both sides' events matched"),
                                     (new_put, "reconciled", "phase 6, new: both sides' events matched")):
            change = await journey(self.admin, exchange.correlation_id or "", until=until)
            c.print(f"  [dim]{why}[/dim]")
            display.render_ledger(c, change)
            self.expect(change.get("stage") == until, f"change {exchange.correlation_id} is "
                                                      f"{change.get('stage')}, expected {until}")
        c.print("[bold]The audit log[/bold] (GET /flags/customer-profile/history)")
        display.render_history(c, (await self.admin.get(f"/flags/{CAPABILITY}/history")).json()["history"])

    def conclude(self) -> None:
        failed = [ex for ex in self.exchanges if not ex.ok]
        self.console.print()
        if failed or self.problems:
            self.console.print(f"[bold red]{len(failed)} exchanges and {len(self.problems)} checks did not go as "
                               "expected.[/bold red]")
            for problem in self.problems:
                self.console.print(f"  {problem}", highlight=False)
        else:
            self.console.print(f"[bold green]All {len(self.exchanges)} exchanges and every check went as "
                               "expected.[/bold green] Run `strangler demo --serve` to explore the dashboard.")


async def _until_stop_signal() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Raise the chatty loggers to WARNING for the duration (httpx logs every request at INFO; the flag
    refresher and the CDC connector announce what the demo shows anyway)."""
    loggers = [logging.getLogger(name) for name in ("httpx", "httpcore", "strangler.routing", "strangler.cdc",
                                                    "strangler.events", "strangler.outcomes", "strangler")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

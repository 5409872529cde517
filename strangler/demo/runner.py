"""`strangler demo`: start the sample apps and the gateway, walk through two routing phases, report.

With `serve`, everything keeps running afterwards until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
from rich.console import Console

from strangler.demo.display import render_outcome, render_phase, render_serving, render_setup
from strangler.demo.errors import DemoFailed
from strangler.demo.scenario import Exchange, demo_phases, run_phase
from strangler.demo.stack import run_stack

EXIT_OK = 0
EXIT_FAILED = 1


def run_demo(*, serve: bool = False, console: Console | None = None) -> int:
    """Run the demo; 0 when every exchange went as expected, 1 otherwise."""
    console = console or Console(highlight=False)
    with tempfile.TemporaryDirectory(prefix="strangler-demo-") as workdir, _quiet("httpx", "httpcore"):
        try:
            return asyncio.run(_demo(Path(workdir), serve=serve, console=console))
        except (DemoFailed, httpx.HTTPError) as exc:
            console.print(f"[bold red]demo failed:[/bold red] {exc}", highlight=False)
            return EXIT_FAILED


async def _demo(workdir: Path, *, serve: bool, console: Console) -> int:
    async with run_stack(workdir) as stack:
        render_setup(console, stack)
        exchanges: list[Exchange] = []
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=5.0, trust_env=False) as client:
            for phase in demo_phases():
                done = await run_phase(client, stack, phase)
                render_phase(console, phase, done)
                exchanges.extend(done)
        render_outcome(console, exchanges)
        if serve:
            render_serving(console, stack)
            await _until_stop_signal()
            console.print("Stopping.")
    return EXIT_OK if all(ex.ok for ex in exchanges) else EXIT_FAILED


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
def _quiet(*names: str) -> Iterator[None]:
    """Raise the named loggers to WARNING for the duration (httpx logs every request at INFO)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)

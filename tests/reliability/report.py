"""Each row's measured figure: printed (`pytest -s` shows it) and, with `STRANGLER_RELIABILITY_FIGURES=FILE`,
appended to FILE as JSON lines, from which the figures in bench/RESULTS.md were taken."""

from __future__ import annotations

import os
import time

import orjson


def full_run() -> bool:
    """The long variants (by hand): `STRANGLER_RELIABILITY_FULL=1`."""
    return os.environ.get("STRANGLER_RELIABILITY_FULL", "") not in ("", "0")


def record(row: str, what: str, figure: object) -> None:
    print(f"FIGURE {row}: {what}: {figure}")
    path = os.environ.get("STRANGLER_RELIABILITY_FIGURES")
    if path:
        with open(path, "ab") as out:
            out.write(orjson.dumps({"row": row, "what": what, "figure": figure, "at": time.time()},
                                   default=str) + b"\n")

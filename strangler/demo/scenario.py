"""The demo's script: phases (the routing modes to set) and the requests each sends through the gateway,
with what each exchange must show for the demo to count as a success."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from strangler.demo.legacy import LEGACY
from strangler.demo.new_service import NEW_CUSTOMERS
from strangler.demo.served_by import SERVED_BY
from strangler.demo.stack import DemoStack
from strangler.gateway.paths import normalize_path
from strangler.routing.modes import Mode
from strangler.routing.router import Router

# Which sample app answers for each upstream of the demo configuration.
APP_OF_UPSTREAM = {"legacy": LEGACY, "customers": NEW_CUSTOMERS}
EXCERPT_CHARS = 120


@dataclass(frozen=True, slots=True)
class Step:
    method: str
    path: str
    body: Mapping[str, Any] | None = None
    expect_status: int = 200
    expect: Mapping[str, Any] | None = None  # top-level JSON fields the response must carry
    focus: tuple[str, ...] = ()  # JSON fields shown in the excerpt (all when empty)
    note: str = ""

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True, slots=True)
class Phase:
    title: str
    summary: str
    modes: Mapping[str, Mode]
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request through the gateway: where it was routed, who answered, and what went wrong if anything."""

    step: Step
    capability: str | None  # None: no capability matched, the default upstream served it
    upstream: str  # the upstream the gateway chose
    served_by: str | None  # the X-Served-By of the response
    status: int
    excerpt: str
    correlation_id: str | None
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def demo_phases() -> tuple[Phase, ...]:
    moved = {"street": "Prinsengracht 263", "postcode": "1016 GV", "city": "Amsterdam", "country": "NL"}
    moved_too = {"street": "Torstrasse 49", "postcode": "10119", "city": "Berlin", "country": "DE"}
    address = ("correspondence_address",)
    policy = ("policy_number", "customer_id", "product", "premium")
    return (
        Phase(
            "Phase 1: customer-profile in mode legacy",
            "Every request goes to the legacy monolith.",
            {"customer-profile": Mode.LEGACY},
            (
                Step("GET", "/customers/1", focus=("full_name", "email")),
                Step("PUT", "/customers/1/address", body=moved, expect={"correspondence_address": moved},
                     focus=address),
                Step("GET", "/customers/1", expect={"correspondence_address": moved}, focus=address),
                Step("GET", "/policies/501", focus=policy),
                Step("GET", "/branches"),
            ),
        ),
        Phase(
            "Phase 2: customer-profile in mode new-only",
            "Customer reads and address changes go to the new service; policies and the rest stay on legacy.",
            {"customer-profile": Mode.NEW_ONLY},
            (
                Step("GET", "/customers/2", focus=("full_name", "email")),
                Step("PUT", "/customers/2/address", body=moved_too, expect={"correspondence_address": moved_too},
                     focus=address),
                Step("GET", "/customers/2", expect={"correspondence_address": moved_too}, focus=address),
                Step("GET", "/policies/503", focus=policy),
                Step("GET", "/customers/1", expect={"correspondence_address": {
                    "street": "Keizersgracht 123", "postcode": "1015 CJ", "city": "Amsterdam", "country": "NL"}},
                     focus=address,
                     note="the new service has its own store: customer 1's phase-1 move, written to legacy, is not "
                          "there (keeping the stores in step is the job of change data capture)"),
            ),
        ),
    )


async def run_phase(client: httpx.AsyncClient, stack: DemoStack, phase: Phase) -> list[Exchange]:
    """Set the phase's modes on the stack's flags, then send its steps through `client` (the gateway's)."""
    for capability, mode in phase.modes.items():
        stack.flags.set(capability, mode)
    return [await run_step(client, stack.proxy.router, step) for step in phase.steps]


async def run_step(client: httpx.AsyncClient, router: Router, step: Step) -> Exchange:
    route = router.route(step.method, normalize_path(step.path.encode()))
    if route is None:
        raise LookupError(f"the demo configuration routes nothing for {step.request_line}")
    upstream = route.decision.primary
    response = await client.request(step.method, step.path, json=step.body)
    served_by = response.headers.get(SERVED_BY)
    problems = []
    if served_by != APP_OF_UPSTREAM.get(upstream):
        problems.append(f"answered by {served_by or 'nobody'}, the gateway routed to {upstream}")
    if response.status_code != step.expect_status:
        problems.append(f"status {response.status_code}, expected {step.expect_status}")
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    for key, value in (step.expect or {}).items():
        got = body.get(key) if isinstance(body, dict) else None
        if got != value:
            problems.append(f"{key} is {json.dumps(got)}, expected {json.dumps(value)}")
    correlation_id = response.headers.get("x-correlation-id")
    if not correlation_id:
        problems.append("no X-Correlation-Id on the response")
    return Exchange(
        step=step,
        capability=route.capability,
        upstream=upstream,
        served_by=served_by,
        status=response.status_code,
        excerpt=excerpt(body, step.focus) if body is not None else _cut(response.text),
        correlation_id=correlation_id,
        problems=tuple(problems),
    )


def excerpt(body: Any, focus: tuple[str, ...] = ()) -> str:
    """Compact JSON of `body` (only the `focus` fields of an object when given), cut to EXCERPT_CHARS."""
    if focus and isinstance(body, dict):
        body = {key: body[key] for key in focus if key in body}
    return _cut(json.dumps(body, ensure_ascii=False, separators=(",", ":")))


def _cut(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"

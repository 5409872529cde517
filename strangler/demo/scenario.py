"""The demo's moves: requests through the gateway (with what each exchange must show), flag changes through
the admin API, and waiting for the evidence to land in the store."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from strangler.demo.legacy import LEGACY
from strangler.demo.new_service import NEW_CUSTOMERS
from strangler.demo.served_by import SERVED_BY
from strangler.demo.stack import DemoStack
from strangler.gateway.paths import normalize_path
from strangler.routing.router import Router
from strangler.routing.sticky import request_key

# Which sample app answers for each upstream of the demo configuration.
APP_OF_UPSTREAM = {"legacy": LEGACY, "customers": NEW_CUSTOMERS}
EXCERPT_CHARS = 120
CAPABILITY = "customer-profile"


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


def _key_of(spec: str, params: Mapping[str, str]) -> str | None:
    return request_key(spec, params, [], b"")


async def run_step(client: httpx.AsyncClient, router: Router, step: Step) -> Exchange:
    route = router.route(step.method, normalize_path(step.path.encode()), _key_of)
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
    return Exchange(step=step, capability=route.capability, upstream=upstream, served_by=served_by,
                    status=response.status_code, excerpt=excerpt(body, step.focus) if body is not None else
                    _cut(response.text), correlation_id=correlation_id, problems=tuple(problems))


def excerpt(body: Any, focus: tuple[str, ...] = ()) -> str:
    """Compact JSON of `body` (only the `focus` fields of an object when given), cut to EXCERPT_CHARS."""
    if focus and isinstance(body, dict):
        body = {key: body[key] for key in focus if key in body}
    return _cut(json.dumps(body, ensure_ascii=False, separators=(",", ":")))


def _cut(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


async def drive(client: httpx.AsyncClient, paths: Iterable[str], concurrency: int = 8) -> Counter[str]:
    """GET every path through the gateway, a few at a time; how many each sample app answered."""
    served: Counter[str] = Counter()
    queue = list(paths)

    async def worker() -> None:
        while queue:
            response = await client.get(queue.pop())
            response.raise_for_status()
            served[response.headers.get(SERVED_BY, "?")] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return served


async def change_flag(stack: DemoStack, admin: httpx.AsyncClient, body: dict[str, Any],
                      capability: str = CAPABILITY) -> httpx.Response:
    """`PUT /flags/{capability}`; on success, wait until the proxy routes by the new flag."""
    response = await admin.put(f"/flags/{capability}", json=body)
    if response.status_code == 200:
        version = response.json()["version"]
        flags = stack.proxy.router.flags
        for _ in range(200):
            if flags.flag(capability).version >= version:
                break
            await asyncio.sleep(0.02)
        else:
            raise TimeoutError("the proxy did not pick the flag change up within 4 s")
    return response


async def report(admin: httpx.AsyncClient, capability: str = CAPABILITY, *, at_least: int = 0,
                 timeout: float = 10.0) -> dict[str, Any]:
    """The capability's divergence report, once at least `at_least` comparisons are stored."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await admin.get("/report", params={"capability": capability})
        response.raise_for_status()
        data: dict[str, Any] = response.json()["capabilities"][0]
        if data["comparisons"] >= at_least or loop.time() > deadline:
            return data
        await asyncio.sleep(0.1)


async def journey(admin: httpx.AsyncClient, correlation_id: str, *, until: str = "reconciled",
                  timeout: float = 10.0) -> dict[str, Any]:
    """`GET /changes/{correlation_id}`, once the change reached `until` (or the time is up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        response = await admin.get(f"/changes/{correlation_id}")
        data: dict[str, Any] = response.json() if response.status_code == 200 else {}
        if data.get("stage") in (until, "exception") or loop.time() > deadline:
            return data
        await asyncio.sleep(0.1)

"""Admin endpoints: `GET /changes/{correlation_id}` ("may I trust this yet?") and `GET /maturity` (lags)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from strangler.maturity.config import MaturityConfig
from strangler.maturity.ledger import overall_stage, stage_lags
from strangler.maturity.store import LedgerStore
from strangler.routing.admin_api import problem
from strangler.store import StoreUnavailable


def maturity_routes(store: LedgerStore, config: MaturityConfig, clock: Callable[[], dt.datetime]) -> list[Route]:
    async def change(request: Request) -> Response:
        correlation_id = request.path_params["correlation_id"]
        try:
            journeys = await run_in_threadpool(store.journeys, correlation_id)
        except StoreUnavailable as exc:
            return problem(503, "Service Unavailable", str(exc))
        if not journeys:
            return problem(404, "Not Found", f"no change is known under correlation id {correlation_id!r}")
        return JSONResponse({
            "correlation_id": correlation_id,
            "stage": overall_stage(journeys).value,
            "trusted": all(j.trusted for j in journeys),
            "changes": [j.as_dict() for j in journeys],
        })

    async def summary(request: Request) -> Response:
        now = clock()
        try:
            journeys = await run_in_threadpool(store.recent, now - dt.timedelta(seconds=config.window))
        except StoreUnavailable as exc:
            return problem(503, "Service Unavailable", str(exc))
        return JSONResponse(stage_lags(journeys, now, dt.timedelta(seconds=config.stuck_after)))

    return [
        Route("/changes/{correlation_id}", change, methods=["GET"]),
        Route("/maturity", summary, methods=["GET"]),
    ]

"""Admin endpoint: `GET /drift?job=&limit=` - open drift per entity with its age, and per-job figures."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from strangler.reconcile.report import drift_jobs
from strangler.reconcile.service import Reconciliation
from strangler.routing.admin_api import problem
from strangler.store import StoreUnavailable


def drift_routes(service: Reconciliation) -> list[Route]:
    jobs = service.config.reconcile.jobs

    async def drift(request: Request) -> Response:
        job = request.query_params.get("job") or None
        if job is not None and job not in jobs:
            return problem(404, "Not Found", f"unknown reconciliation job {job!r}")
        try:
            limit = max(1, min(100_000, int(request.query_params.get("limit", "1000"))))
        except ValueError:
            return problem(422, "Unprocessable Content", "limit must be an integer")
        names = [job] if job else list(jobs)
        try:
            out = await run_in_threadpool(drift_jobs, service.store, jobs, names, service.clock(), limit)
        except StoreUnavailable as exc:
            return problem(503, "Service Unavailable", str(exc))
        return JSONResponse({"jobs": out})

    return [Route("/drift", drift, methods=["GET"])]

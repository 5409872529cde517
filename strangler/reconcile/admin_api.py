"""Admin endpoint: `GET /drift?job=&limit=` - open drift per entity with its age, and per-job figures."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from strangler.reconcile.runner import group_records
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
        now = service.clock()
        names = [job] if job else list(jobs)
        try:
            summary = await run_in_threadpool(service.store.summary, now)
            out = []
            for name in names:
                records = await run_in_threadpool(service.store.open_drift, name, limit)
                runs = await run_in_threadpool(service.store.runs, name, 1)
                figures = summary.get(name, {"drifted_entities": 0, "oldest_drift_seconds": 0.0})
                out.append({"job": name, "entity": jobs[name].entity, **figures,
                            "last_run": runs[0] if runs else None,
                            "drifted": group_records(records, jobs[name].legacy.key, now)})
        except StoreUnavailable as exc:
            return problem(503, "Service Unavailable", str(exc))
        return JSONResponse({"jobs": out})

    return [Route("/drift", drift, methods=["GET"])]

"""Admin endpoints for shadow results: `GET /divergences` and `GET /report` (JSON or HTML)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from strangler.routing.admin_api import problem
from strangler.shadow.evidence import ShadowEvidence
from strangler.shadow.report import build_report, render_html
from strangler.store import StoreUnavailable


def shadow_routes(evidence: ShadowEvidence) -> list[Route]:
    def _capability(request: Request) -> tuple[str | None, Response | None]:
        capability = request.query_params.get("capability") or None
        if capability is not None and capability not in evidence.capabilities:
            return None, problem(404, "Not Found", f"unknown capability {capability!r}")
        return capability, None

    async def divergences(request: Request) -> Response:
        capability, error = _capability(request)
        if error is not None:
            return error
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return problem(422, "Unprocessable Content", "limit must be an integer")
        try:
            rows = await run_in_threadpool(evidence.store.divergences, capability, limit)
        except StoreUnavailable as exc:
            return problem(503, "Service Unavailable", str(exc))
        return JSONResponse({"divergences": rows})

    async def report(request: Request) -> Response:
        capability, error = _capability(request)
        if error is not None:
            return error
        fmt = request.query_params.get("format", "json")
        if fmt not in ("json", "html"):
            return problem(422, "Unprocessable Content", "format must be json or html")
        try:
            data = await run_in_threadpool(build_report, evidence, [capability] if capability else None)
        except StoreUnavailable as exc:
            return problem(503, "Service Unavailable", str(exc))
        if fmt == "html":
            return HTMLResponse(render_html(data))
        return JSONResponse(data)

    return [Route("/divergences", divergences, methods=["GET"]), Route("/report", report, methods=["GET"])]

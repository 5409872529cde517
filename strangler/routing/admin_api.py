"""Admin endpoints for flags: `GET /flags`, `PUT /flags/{capability}`, `GET /flags/{capability}/history`.

While the store is unreachable `GET /flags` answers from this process's cache (what it routes by), marked
`stale` with the time it was read (`as_of`) and a `Warning` header; writes answer 503.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from strangler.routing.errors import GateRefused, InvalidChange, UnknownCapability, VersionConflict
from strangler.routing.modes import Mode
from strangler.routing.refresh import FlagCache, FlagRefresher
from strangler.routing.service import FlagService
from strangler.store import StoreUnavailable


class FlagChangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Mode
    percent: float | None = Field(None, ge=0, le=100)
    reason: str = Field(min_length=1, max_length=2000)
    expected_version: int | None = Field(None, ge=0)
    force: bool = False


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra},
        status_code=status,
        media_type="application/problem+json",
    )


def cached_flags(service: FlagService, cache: FlagCache) -> list[dict[str, Any]]:
    """The flags this process routes by, as `GET /flags` lists them: the cache's modes with their stored rows."""
    items = []
    for name in service.capabilities:
        flag, record = cache.flag(name), cache.records.get(name)
        if record is not None and record.version == flag.version:
            items.append(record.as_dict())
        else:
            reason = "initial mode from configuration" if flag.version == 0 else None
            items.append({"capability": name, "mode": flag.mode.value, "percent": flag.percent,
                          "version": flag.version, "updated_at": None, "updated_by": None, "reason": reason})
    return items


def stored_flags(service: FlagService, stored: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every capability's flag as `GET /flags` lists it from the store's rows (`stored`): the configured mode
    until one is stored."""
    items = []
    for name, cap in service.capabilities.items():
        flag = stored.get(name)
        if flag is not None:
            items.append(flag.as_dict())
        else:
            items.append({"capability": name, "mode": cap.mode.value, "percent": cap.percent, "version": 0,
                          "updated_at": None, "updated_by": None, "reason": "initial mode from configuration"})
    return items


def cache_as_of(cache: FlagCache, now: dt.datetime) -> str | None:
    """When `cache` last read the store, as ISO time (`now`: the wall time now), or None if it never did."""
    if cache.loaded_at is None:
        return None
    return (now - dt.timedelta(seconds=time.monotonic() - cache.loaded_at)).isoformat()


def flag_routes(service: FlagService, cache: FlagCache, refresher: FlagRefresher | None = None) -> list[Route]:
    async def list_flags(request: Request) -> Response:
        now = time.monotonic()
        try:
            stored = await run_in_threadpool(service.store.load)
        except StoreUnavailable as exc:
            # reads go on from memory: the flags this process routes by, marked stale; writes stay 503
            as_of = cache_as_of(cache, dt.datetime.now(dt.UTC))
            warning = (f"flags as of {as_of}" if as_of else "configured initial modes; the store was never reached")
            return JSONResponse(
                {"flags": cached_flags(service, cache), **cache.status(now), "flag_store": "unreachable",
                 "stale": True, "as_of": as_of,
                 "flag_store_error": str(exc).splitlines()[0][:300]},
                headers={"warning": f'110 - "Response is Stale: the flag store is unreachable; {warning}"'},
            )
        return JSONResponse({"flags": stored_flags(service, stored), **cache.status(now), "stale": False,
                             "as_of": dt.datetime.now(dt.UTC).isoformat()})

    async def put_flag(request: Request) -> Response:
        capability = request.path_params["capability"]
        if capability not in service.capabilities:
            return problem(404, "Not Found", f"unknown capability {capability!r}")
        try:
            body = FlagChangeRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            errors = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
                      for e in exc.errors(include_url=False)]
            return problem(422, "Unprocessable Content", "invalid flag change", errors=errors)
        actor = request.scope.get("state", {}).get("admin_token_name", "unknown")
        try:
            flag = await run_in_threadpool(
                service.change,
                capability,
                mode=body.mode,
                percent=body.percent,
                reason=body.reason,
                actor=actor,
                expected_version=body.expected_version,
                force=body.force,
            )
        except UnknownCapability as exc:
            return problem(404, "Not Found", str(exc))
        except InvalidChange as exc:
            return problem(422, "Unprocessable Content", str(exc),
                           errors=[{"field": exc.field, "message": exc.message}])
        except VersionConflict as exc:
            return problem(409, "Conflict", f"expected_version is stale: {exc}", current=exc.current.as_dict())
        except GateRefused as exc:
            return problem(412, "Precondition Failed", exc.decision.explanation, evidence=exc.decision.as_dict())
        except StoreUnavailable as exc:
            return problem(503, "Service Unavailable", f"the flag store is unreachable; no change made: {exc}")
        if refresher is not None:
            refresher.wake()
        return JSONResponse(flag.as_dict())

    async def history(request: Request) -> Response:
        capability = request.path_params["capability"]
        if capability not in service.capabilities:
            return problem(404, "Not Found", f"unknown capability {capability!r}")
        try:
            limit = max(1, min(1000, int(request.query_params.get("limit", "100"))))
        except ValueError:
            return problem(422, "Unprocessable Content", "limit must be an integer")
        try:
            entries = await run_in_threadpool(service.store.history, capability, limit)
        except StoreUnavailable as exc:
            return problem(503, "Service Unavailable", f"the flag store is unreachable: {exc}")
        return JSONResponse({"capability": capability, "history": [e.as_dict() for e in entries]})

    return [
        Route("/flags", list_flags, methods=["GET"]),
        Route("/flags/{capability}", put_flag, methods=["PUT"]),
        Route("/flags/{capability}/history", history, methods=["GET"]),
    ]

"""The admin listener: health, readiness and metrics (open), everything else behind a bearer token.

Other packages add their endpoints by passing routes to `build_admin_app`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json", "/dashboard/login"})
# The dashboard's pages also accept the token from this cookie (set by its login form: HttpOnly,
# SameSite=Strict); everywhere else only the Authorization header counts.
DASHBOARD_PREFIX = "/dashboard"
SESSION_COOKIE = "strangler_admin"
Readiness = Callable[[], tuple[bool, dict[str, Any]]]


class BearerTokenMiddleware:
    """Requires `Authorization: Bearer <token>` on every path but the open ones; records the token's name.

    Tokens are compared in constant time. The name of the matching token is put in `scope["state"]`
    as `admin_token_name`, for the audit log. Under `DASHBOARD_PREFIX` the token may come from the
    `SESSION_COOKIE` instead, and a request without a valid one is sent to the login form.
    """

    def __init__(self, app: ASGIApp, tokens: Mapping[str, SecretStr], open_paths: frozenset[str] = OPEN_PATHS):
        self.app = app
        self.tokens = [(name, secret.get_secret_value().encode()) for name, secret in tokens.items()]
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        name = self._authenticate(scope)
        if name is None and _is_dashboard(scope["path"]):
            await RedirectResponse(f"{DASHBOARD_PREFIX}/login", status_code=303)(scope, receive, send)
            return
        if name is None:
            response = JSONResponse(
                {"type": "about:blank", "title": "Unauthorized", "status": 401,
                 "detail": "a valid 'Authorization: Bearer <token>' header is required"},
                status_code=401,
                headers={"www-authenticate": 'Bearer realm="strangler-admin"'},
                media_type="application/problem+json",
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["admin_token_name"] = name
        await self.app(scope, receive, send)

    def _authenticate(self, scope: Scope) -> str | None:
        presented = b""
        for key, value in scope["headers"]:
            if key == b"authorization" and value[:7].lower() == b"bearer ":
                presented = value[7:].strip()
        if not presented and _is_dashboard(scope["path"]):
            presented = session_cookie(scope)
        if not presented:
            return None
        found = None
        for name, token in self.tokens:
            if hmac.compare_digest(presented, token):  # check every token: timing reveals nothing
                found = name
        return found


def _is_dashboard(path: str) -> bool:
    return path == DASHBOARD_PREFIX or path.startswith(DASHBOARD_PREFIX + "/")


def session_cookie(scope: Scope) -> bytes:
    """The dashboard's token cookie of a request (percent-encoded by the login form), or b""."""
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in value.split(b";"):
                name, _, token = part.strip().partition(b"=")
                if name == SESSION_COOKIE.encode() and token:
                    return unquote_to_bytes(token)
    return b""


def build_admin_app(
    *,
    tokens: Mapping[str, SecretStr],
    metrics: Callable[[], bytes],
    readiness: Readiness,
    routes: Sequence[BaseRoute] = (),
) -> ASGIApp:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready, detail = readiness()
        return JSONResponse({"ready": ready, **detail}, status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            *routes,
        ]
    )
    return BearerTokenMiddleware(app, tokens)


def registry_metrics(registry: CollectorRegistry) -> Callable[[], bytes]:
    return lambda: generate_latest(registry)


def multiprocess_metrics() -> Callable[[], bytes]:
    """Aggregate the samples that every worker process wrote to PROMETHEUS_MULTIPROC_DIR."""
    from prometheus_client import multiprocess

    def collect() -> bytes:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    return collect

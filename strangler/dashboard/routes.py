"""The dashboard's pages on the admin listener: an overview, a page per capability with its flip form, and
the sign-in form. Server-rendered (Jinja2), no script needed; a flip goes through `FlagService.change`, the
same operation as `PUT /flags/{capability}`, so its gate, `force` and `expected_version` rules are the API's.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, Router

from strangler.dashboard.charts import rate_chart, sparkline
from strangler.dashboard.session import DashboardSession
from strangler.dashboard.views import DashboardSources, capability_page, overview
from strangler.gateway.admin import DASHBOARD_PREFIX
from strangler.routing.errors import GateRefused, InvalidChange, UnknownCapability, VersionConflict
from strangler.routing.modes import Mode
from strangler.store import StoreUnavailable

MAX_FORM_BYTES = 16 * 1024


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def _when(value: str | None) -> str:
    if not value:
        return "–"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _value(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("strangler.dashboard", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(pct=_pct, when=_when, duration=_duration, value=_value)
    env.globals.update(rate_chart=rate_chart, sparkline=sparkline, prefix=DASHBOARD_PREFIX)
    return env


def _problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"status": status, "title": title, "detail": detail, **extra}


class Dashboard:
    def __init__(self, sources: DashboardSources, tokens: Mapping[str, SecretStr]) -> None:
        self.sources = sources
        self.session = DashboardSession(tokens)
        self.env = _environment()

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        page = self.env.get_template(template).render(
            signed_in_as=request.scope.get("state", {}).get("admin_token_name"),
            form_token=self.session.form_token(request), **context)
        return HTMLResponse(page, status_code=status, headers={
            "cache-control": "no-store", "x-frame-options": "DENY", "referrer-policy": "same-origin",
            "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                                       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"})

    # -- sign-in ---------------------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", error=None)

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        token = form.get("token", "").strip()
        if self.session.token_name(token) is None:
            return self.render(request, "login.html", status=401, error="That token is not one of this gateway's "
                               "admin tokens (admin.tokens in its configuration).")
        response = RedirectResponse(f"{DASHBOARD_PREFIX}/", status_code=303)
        self.session.sign_in(response, token, secure=request.url.scheme == "https")
        return response

    async def logout(self, request: Request) -> Response:
        form = await _form(request)
        if not self.session.form_is_genuine(request, form.get("form_token", "")):
            return _forbidden()
        response = RedirectResponse(f"{DASHBOARD_PREFIX}/login", status_code=303)
        self.session.sign_out(response, secure=request.url.scheme == "https")
        return response

    # -- pages -----------------------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        try:
            data = await run_in_threadpool(overview, self.sources)
        except StoreUnavailable as exc:
            return self.render(request, "unavailable.html", status=503, detail=str(exc))
        return self.render(request, "overview.html", **data)

    async def capability(self, request: Request, problem: dict[str, Any] | None = None,
                         submitted: dict[str, str] | None = None, status: int = 200) -> Response:
        name = request.path_params["capability"]
        if name not in self.sources.flags.capabilities:
            return self.render(request, "unavailable.html", status=404, detail=f"There is no capability {name!r}.")
        try:
            data = await run_in_threadpool(capability_page, self.sources, name)
        except StoreUnavailable as exc:
            return self.render(request, "unavailable.html", status=503, detail=str(exc))
        changed = request.query_params.get("changed")
        return self.render(request, "capability.html", status=status, problem=problem, submitted=submitted or {},
                           changed=changed, **data)

    async def flip(self, request: Request) -> Response:
        name = request.path_params["capability"]
        form = await _form(request)
        if not self.session.form_is_genuine(request, form.get("form_token", "")):
            return _forbidden()
        actor = request.scope.get("state", {}).get("admin_token_name", "unknown")
        problem = None
        try:
            mode = Mode(form.get("mode", ""))
            percent = float(form["percent"]) if form.get("percent", "").strip() else None
            expected = int(form["expected_version"]) if form.get("expected_version", "").strip() else None
            if percent is not None and not 0 <= percent <= 100:
                raise InvalidChange("percent", "percent must be between 0 and 100")
            flag = await run_in_threadpool(
                self.sources.flags.change, name, mode=mode, percent=percent, reason=form.get("reason", ""),
                actor=actor, expected_version=expected, force=form.get("force") == "on")
        except ValueError:
            problem = _problem(422, "Not changed: the form is incomplete",
                               "Choose one of the modes, and give the percent as a number between 0 and 100.")
        except UnknownCapability as exc:
            problem = _problem(404, "Not changed: unknown capability", str(exc))
        except InvalidChange as exc:
            problem = _problem(422, "Not changed: the change is not valid", f"{exc.field}: {exc.message}")
        except VersionConflict as exc:
            problem = _problem(409, "Not changed: someone else changed this flag first",
                               "The flag moved on since this page was loaded. Its current state is shown below; "
                               "check it, then submit again if you still want the change.",
                               current=exc.current.as_dict())
        except GateRefused as exc:
            problem = _problem(412, "Refused: the gate is not met", exc.decision.explanation,
                               evidence=exc.decision.as_dict())
        except StoreUnavailable as exc:
            problem = _problem(503, "Not changed: the flag store is unreachable", str(exc))
        if problem is not None:
            return await self.capability(request, problem=problem, submitted=form, status=problem["status"])
        if self.sources.refresher is not None:
            self.sources.refresher.wake()
        return RedirectResponse(f"{DASHBOARD_PREFIX}/capabilities/{quote(name, safe='')}?changed={flag.version}",
                                status_code=303)

    def router(self) -> Router:
        return Router(routes=[
            Route("/", self.overview, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/capabilities/{capability}", self.capability, methods=["GET"]),
            Route("/capabilities/{capability}/flag", self.flip, methods=["POST"]),
        ])


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form body (last value of each field), at most MAX_FORM_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[-1] for key, values in fields.items()}


def _forbidden() -> Response:
    return HTMLResponse("<p>This form did not come from this dashboard, or its session has ended. "
                        f'<a href="{DASHBOARD_PREFIX}/">Reload the dashboard</a> and try again.</p>', status_code=403)


def dashboard_routes(sources: DashboardSources, tokens: Mapping[str, SecretStr]) -> list[Mount]:
    """The dashboard mounted at `/dashboard` (sign-in at `/dashboard/login`)."""
    return [Mount(DASHBOARD_PREFIX, app=Dashboard(sources, tokens).router())]

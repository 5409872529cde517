from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from strangler.dashboard import HttpCdcStatus, LocalCdcStatus
from strangler.dashboard.cdc_status import ConfiguredOnly, cdc_status_for
from strangler.dashboard.charts import rate_chart
from strangler.maturity.ledger import Stage, StageEvent
from strangler.maturity.store import SqlLedgerStore
from strangler.routing.refresh import FlagRefresher
from strangler.store import create_store_engine
from tests.dashboard.estate import (
    CAP,
    TOKEN,
    UNPROVEN,
    build_estate,
    estate_config,
    seed_comparisons,
    seed_drift,
)

BASE = "http://admin.test"


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@contextlib.asynccontextmanager
async def _signed_in(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as client:
        response = await client.post("/dashboard/login", data={"token": TOKEN})
        assert (response.status_code, response.headers["location"]) == (303, "/dashboard/")
        yield client


def _form_token(page: str) -> str:
    match = re.search(r'name="form_token" value="([0-9a-f]{64})"', page)
    assert match, "no form token on the page"
    return match.group(1)


@pytest.fixture
async def estate(tmp_path: Path) -> AsyncIterator[tuple[Any, Any]]:
    config, parts = build_estate(tmp_path)
    seed_comparisons(config)
    yield config, parts


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/capabilities/customer-profile", "/dashboard"])
async def test_a_visitor_without_a_session_is_sent_to_the_login_form(estate: tuple[Any, Any], path: str) -> None:
    async with _client(estate[1].app) as client:
        response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"


async def test_a_wrong_token_is_refused_without_a_cookie(estate: tuple[Any, Any]) -> None:
    async with _client(estate[1].app) as client:
        response = await client.post("/dashboard/login", data={"token": "not-the-token-at-all"})
    assert response.status_code == 401
    assert "is not one of this gateway" in response.text and "admin.tokens" in response.text
    assert "set-cookie" not in response.headers


async def test_the_session_cookie_is_http_only_same_site_strict_and_opens_only_the_dashboard(
    estate: tuple[Any, Any],
) -> None:
    async with _signed_in(estate[1].app) as client:
        cookie = client.cookies.jar
        (stored,) = list(cookie)
        assert stored.name == "strangler_admin" and stored.path == "/dashboard"
        assert stored.has_nonstandard_attr("HttpOnly") and stored.get_nonstandard_attr("SameSite") == "strict"
        assert (await client.get("/dashboard/")).status_code == 200
        # the API keeps requiring the bearer header: the cookie is not sent there, and is not accepted if it is
        api = await client.get("/flags", headers={"cookie": f"strangler_admin={TOKEN}"})
        assert api.status_code == 401


async def test_overview_lists_every_capability_with_mode_and_gate(estate: tuple[Any, Any]) -> None:
    async with _signed_in(estate[1].app) as client:
        page = (await client.get("/dashboard/")).text
    for name in (CAP, UNPROVEN, "policy"):
        assert f'href="/dashboard/capabilities/{name}"' in page
    assert "160 of 100 samples · 2.50% divergent (max 5.00%)" in page
    assert "0 of 200 samples" in page and "gate not met" in page
    assert "no new side configured" in page
    assert "No connectors configured" in page


async def test_a_flip_through_the_form_is_the_api_s_change_with_its_audit_entry(estate: tuple[Any, Any]) -> None:
    async with _signed_in(estate[1].app) as client:
        page = (await client.get(f"/dashboard/capabilities/{CAP}")).text
        response = await client.post(f"/dashboard/capabilities/{CAP}/flag", data={
            "form_token": _form_token(page), "mode": "canary", "percent": "25", "reason": "a quarter of the keys",
            "expected_version": "0"})
        assert (response.status_code, response.headers["location"]) == (
            303, f"/dashboard/capabilities/{CAP}?changed=1")
        history = (await client.get(f"/flags/{CAP}/history", headers={"authorization": f"Bearer {TOKEN}"})).json()
        shown = (await client.get(response.headers["location"])).text
    (entry,) = history["history"]
    assert (entry["actor"], entry["to"], entry["reason"], entry["forced"]) == (
        "ops", {"mode": "canary", "percent": 25.0}, "a quarter of the keys", False)
    assert "now in mode <strong>canary</strong> at 25%" in shown
    assert 'class="audit-entry"' in shown and "a quarter of the keys" in shown


async def test_while_the_store_is_stopped_the_pages_show_the_flags_in_memory_and_flips_are_disabled(
    tmp_path: Path, pg_database: Any, pg_cluster: Any
) -> None:
    config = estate_config(tmp_path, store=pg_database.url())
    _, parts = build_estate(tmp_path, config=config)
    seed_comparisons(config)
    refresher = next(part for part in parts.lifecycle if isinstance(part, FlagRefresher))
    async with _signed_in(parts.app) as client:
        page = (await client.get(f"/dashboard/capabilities/{CAP}")).text
        assert "flip-controls\"" in page and "Flag store unreachable" not in page
        flipped = await client.post(f"/dashboard/capabilities/{CAP}/flag", data={
            "form_token": _form_token(page), "mode": "shadow", "reason": "start comparing", "expected_version": "0"})
        assert flipped.status_code == 303
        await refresher.refresh()  # what the running refresher does within its interval
        read_at = dt.datetime.now(dt.UTC)
        pg_cluster.stop()
        try:
            overview = await client.get("/dashboard/")
            capability = await client.get(f"/dashboard/capabilities/{CAP}")
            refused = await client.post(f"/dashboard/capabilities/{CAP}/flag", data={
                "form_token": _form_token(capability.text), "mode": "legacy", "reason": "back",
                "expected_version": "1"})
        finally:
            pg_cluster.start()
        back = await client.get(f"/dashboard/capabilities/{CAP}")
    # the overview: every capability with the mode this process routes by, under the banner
    assert overview.status_code == 200, overview.text
    banner = re.search(r"Flag store unreachable, showing flags as of (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC",
                       overview.text)
    assert banner, overview.text
    as_of = dt.datetime.strptime(banner.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.UTC)
    assert read_at - dt.timedelta(minutes=1) <= as_of <= read_at + dt.timedelta(seconds=1)
    assert 'badge mode-shadow">shadow' in overview.text and "start comparing" in overview.text
    for name in (CAP, UNPROVEN, "policy"):
        assert f'href="/dashboard/capabilities/{name}"' in overview.text
    assert "evidence unavailable while the store is unreachable" in overview.text
    assert overview.text.count("Unavailable while the store is unreachable.") == 2  # maturity, drift
    assert "Figures as of" not in overview.text  # there are none
    # the capability page: the flag as routed, its controls disabled
    assert capability.status_code == 200
    assert "Flag store unreachable, showing flags as of" in capability.text
    assert '<fieldset class="flip-controls" disabled>' in capability.text
    assert 'badge mode-shadow">shadow' in capability.text and "start comparing" in capability.text
    assert "Disabled while the flag store is unreachable" in capability.text
    # a form posted anyway changes nothing and says why, on the same page
    assert refused.status_code == 503
    assert "Not changed: the flag store is unreachable" in refused.text
    assert '<fieldset class="flip-controls" disabled>' in refused.text
    # the store back: the page is whole again, with the audit entry
    assert back.status_code == 200 and "Flag store unreachable" not in back.text
    assert 'class="audit-entry"' in back.text and "disabled>" not in back.text


async def test_a_process_that_never_reached_the_store_shows_the_configured_modes_under_the_banner(
    tmp_path: Path, pg_database: Any, pg_cluster: Any
) -> None:
    config = estate_config(tmp_path, store=pg_database.url())
    pg_cluster.stop()
    try:
        _, parts = build_estate(tmp_path, config=config)
        await next(part for part in parts.lifecycle if isinstance(part, FlagRefresher)).refresh()
        async with _signed_in(parts.app) as client:
            overview = await client.get("/dashboard/")
            capability = await client.get(f"/dashboard/capabilities/{CAP}")
    finally:
        pg_cluster.start()
    assert (overview.status_code, capability.status_code) == (200, 200)
    for page in (overview.text, capability.text):
        assert "Flag store unreachable, showing flags as of start-up (the configured modes)" in page
        assert 'badge mode-legacy">legacy' in page
    assert '<fieldset class="flip-controls" disabled>' in capability.text


@pytest.mark.parametrize(
    ("form", "status", "text"),
    [
        ({"mode": "shadow", "reason": "go", "expected_version": "7"}, 409,
         "someone else changed this flag first"),
        ({"mode": "canary", "reason": "go"}, 422, "canary needs a percent"),
        ({"mode": "canary", "percent": "250", "reason": "go"}, 422, "percent must be between 0 and 100"),
        ({"mode": "sideways", "reason": "go"}, 422, "Choose one of the modes"),
        ({"mode": "shadow", "reason": "  "}, 422, "a reason is required"),
    ],
)
async def test_a_refused_flip_is_explained_on_the_page(
    estate: tuple[Any, Any], form: dict[str, str], status: int, text: str
) -> None:
    async with _signed_in(estate[1].app) as client:
        token = _form_token((await client.get(f"/dashboard/capabilities/{CAP}")).text)
        response = await client.post(f"/dashboard/capabilities/{CAP}/flag", data={"form_token": token, **form})
    assert response.status_code == status
    assert text in response.text
    assert "No change recorded yet" in response.text


async def test_a_gate_refusal_shows_the_evidence_and_force_overrides_it(estate: tuple[Any, Any]) -> None:
    async with _signed_in(estate[1].app) as client:
        token = _form_token((await client.get(f"/dashboard/capabilities/{UNPROVEN}")).text)
        form = {"form_token": token, "mode": "canary", "percent": "5", "reason": "first users"}
        refused = await client.post(f"/dashboard/capabilities/{UNPROVEN}/flag", data=form)
        forced = await client.post(f"/dashboard/capabilities/{UNPROVEN}/flag", data={**form, "force": "on"})
        page = (await client.get(forced.headers["location"])).text
    assert refused.status_code == 412
    assert "Refused: the gate is not met" in refused.text and "0 samples &lt; 200 required" in refused.text
    assert "at least 200" in refused.text
    assert forced.status_code == 303
    assert ">forced</span>" in page


@pytest.mark.parametrize(
    ("headers", "token"),
    [({}, "0" * 64), ({}, ""), ({"origin": "http://evil.example"}, None)],
)
async def test_a_flip_from_another_site_or_without_the_form_token_is_forbidden(
    estate: tuple[Any, Any], headers: dict[str, str], token: str | None
) -> None:
    async with _signed_in(estate[1].app) as client:
        genuine = _form_token((await client.get(f"/dashboard/capabilities/{CAP}")).text)
        response = await client.post(f"/dashboard/capabilities/{CAP}/flag", headers=headers, data={
            "form_token": genuine if token is None else token, "mode": "legacy", "reason": "csrf"})
        history = (await client.get(f"/flags/{CAP}/history", headers={"authorization": f"Bearer {TOKEN}"})).json()
    assert response.status_code == 403
    assert history["history"] == []


async def test_sign_out_ends_the_session(estate: tuple[Any, Any]) -> None:
    async with _signed_in(estate[1].app) as client:
        token = _form_token((await client.get("/dashboard/")).text)
        response = await client.post("/dashboard/logout", data={"form_token": token})
        assert (response.status_code, response.headers["location"]) == (303, "/dashboard/login")
        assert (await client.get("/dashboard/")).status_code == 303


async def test_stuck_and_failed_changes_are_listed_with_their_stage(tmp_path: Path) -> None:
    config, parts = build_estate(tmp_path)
    now = dt.datetime.now(dt.UTC)
    long_ago = now - dt.timedelta(hours=2)
    SqlLedgerStore(create_store_engine(config.store)).record([
        StageEvent("cid-stuck", "7", Stage.ACCEPTED, long_ago, CAP),
        StageEvent("cid-stuck", "7", Stage.APPLIED, long_ago, CAP),
        StageEvent("cid-bad", "8", Stage.ACCEPTED, now, CAP),
        StageEvent("cid-bad", "8", Stage.EXCEPTION, now, CAP, detail="outcome differs: /street (regression)"),
        StageEvent("cid-fine", "9", Stage.ACCEPTED, now, CAP),
    ])
    async with _signed_in(parts.app) as client:
        page = (await client.get("/dashboard/")).text
    assert "3 changes in the last 24.0 h · 1 in exception" in page
    assert "cid-stuck" in page and "cid-bad" in page and "cid-fine" not in page
    assert "outcome differs: /street (regression)" in page


async def test_the_overview_shows_open_drift_per_reconciliation_job_with_its_age(tmp_path: Path) -> None:
    config, parts = build_estate(tmp_path)
    seed_drift(config)
    async with _signed_in(parts.app) as client:
        page = (await client.get("/dashboard/")).text
        api = (await client.get("/drift", headers={"authorization": f"Bearer {TOKEN}"})).json()["jobs"]
    section = page[page.index('id="drift"'):]
    jobs = re.findall(r'<tr class="drift-job">(.*?)</tr>', section, re.S)
    assert len(jobs) == 2
    customers, invoices = jobs
    assert "<strong>customers</strong>" in customers and '<span class="badge fail">2</span>' in customers
    assert "60 min" in customers  # the oldest drift: customer 7, seen first an hour ago
    assert "done" in customers and "2,500 compared" in customers
    assert "<strong>invoices</strong>" in invoices and "never run" in invoices and 'badge pass">0<' in invoices
    entries = re.findall(r'<tr class="drift-entry">(.*?)</tr>', section, re.S)
    assert len(entries) == 2
    assert "maria@example.nl" in entries[0] and "maria@old.example" in entries[0] and "60 min" in entries[0]
    assert "<code>(row)</code>" in entries[1] and "absent" in entries[1] and "5 min" in entries[1]
    # the panel shows what GET /drift gives
    assert [(j["job"], j["drifted_entities"]) for j in api] == [("customers", 2), ("invoices", 0)]


async def test_without_reconciliation_jobs_the_drift_panel_says_so(tmp_path: Path) -> None:
    config = estate_config(tmp_path)
    bare = config.model_copy(update={"reconcile": config.reconcile.model_copy(update={"jobs": {}})})
    _, parts = build_estate(tmp_path, config=bare)
    async with _signed_in(parts.app) as client:
        page = (await client.get("/dashboard/")).text
    assert "No reconciliation jobs configured" in page[page.index('id="drift"'):]


def _cdc_handler(acknowledged: list[int]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/healthz"
        return httpx.Response(200, json={"healthy": True, "connectors": [
            {"connector": "legacy-crm", "phase": "streaming", "healthy": True, "reason": None,
             "acknowledged": acknowledged.pop(0), "in_flight": 0, "lag_seconds": 0.25, "lag_bytes": 4096}]})

    return httpx.MockTransport(handler)


def test_cdc_status_is_read_from_the_connector_process_with_throughput_between_readings() -> None:
    times = iter([100.0, 102.0])
    source = HttpCdcStatus(["legacy-crm"], "0.0.0.0:9902", clock=lambda: next(times),
                           transport=_cdc_handler([1000, 1500]))
    assert source.url == "http://127.0.0.1:9902/healthz"
    first, second = source.overview(), source.overview()
    assert first.connectors[0].throughput is None
    status = second.connectors[0]
    assert (status.name, status.phase, status.lag_seconds, status.lag_bytes) == ("legacy-crm", "streaming", 0.25, 4096)
    assert status.throughput == 250.0


def test_an_unreachable_cdc_process_is_reported_not_raised() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    overview = HttpCdcStatus(["legacy-crm"], "127.0.0.1:9902", transport=httpx.MockTransport(refuse)).overview()
    assert overview.connectors == () and overview.configured == ("legacy-crm",)
    assert overview.problem is not None and "connection refused" in overview.problem


class _Connector:
    name = "demo"

    def __init__(self) -> None:
        self.acknowledged = 0

    def report(self) -> dict[str, Any]:
        self.acknowledged += 30
        return {"connector": "demo", "phase": "streaming", "healthy": True, "acknowledged": self.acknowledged,
                "lag_seconds": 0.0, "lag_bytes": None, "in_flight": 0}


async def test_in_process_connectors_show_on_the_overview(tmp_path: Path) -> None:
    times = iter([10.0, 11.0])
    _, parts = build_estate(tmp_path, cdc_status=LocalCdcStatus([_Connector()], clock=lambda: next(times)))
    async with _signed_in(parts.app) as client:
        await client.get("/dashboard/")
        page = (await client.get("/dashboard/")).text
    section = page[page.index('id="cdc"'):page.index('id="maturity"')]
    assert "demo" in section and "streaming" in section and "30.0/s" in section and "60" in section


def test_the_configuration_decides_where_cdc_status_comes_from(tmp_path: Path) -> None:
    from strangler.cdc.config import CdcConfig

    assert cdc_status_for(None).overview().any_configured is False
    connectors = {"legacy-crm": {"source": {"kind": "sqlite", "path": str(tmp_path / "x.db")},
                                 "sink": {"kind": "jsonl", "path": "-"}}}
    without = cdc_status_for(CdcConfig.model_validate({"connectors": connectors}))
    assert isinstance(without, ConfiguredOnly) and "cdc.metrics_listen" in (without.overview().hint or "")
    listening = cdc_status_for(CdcConfig.model_validate({"connectors": connectors, "metrics_listen": "[::1]:9902"}))
    assert isinstance(listening, HttpCdcStatus) and listening.url == "http://[::1]:9902/healthz"


def test_the_rate_chart_marks_empty_buckets_and_the_gate_line() -> None:
    timeline = [{"start": "2025-06-01T12:00:00+00:00", "comparisons": 10, "divergent": 0, "rate": 0.0},
                {"start": "2025-06-01T12:05:00+00:00", "comparisons": 0, "divergent": 0, "rate": None},
                {"start": "2025-06-01T12:10:00+00:00", "comparisons": 10, "divergent": 3, "rate": 0.3}]
    svg = str(rate_chart(timeline, 0.05))
    assert svg.count('class="bar"') == 2
    assert "12:05: nothing compared" in svg
    assert "12:10: 30.0% of 10 comparisons diverged" in svg and "#c62828" in svg
    assert 'class="threshold"' in svg and "gate max 5%" in svg

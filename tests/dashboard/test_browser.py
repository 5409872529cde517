"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright (the system executable;
no browser is downloaded). Sign in, see the open state drift, read a capability, flip it through the form, see
the audit entry and a refused flip explained; the screenshots are kept under tests/artifacts/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.dashboard.estate import CAP, TOKEN, UNPROVEN, build_estate, seed_comparisons, seed_drift
from tests.support.echo import ThreadedUvicorn

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # a failure, not a skip: .ci/run installs Debian's chromium
        raise AssertionError("Debian's chromium is not installed (apt-get install -y chromium)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def admin_url(tmp_path: Path) -> Iterator[str]:
    config, parts = build_estate(tmp_path)
    seed_comparisons(config)
    seed_drift(config)
    server = ThreadedUvicorn(parts.app)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def _sign_in(page: Page, admin_url: str) -> None:
    page.goto(f"{admin_url}/dashboard/")
    expect(page).to_have_url(f"{admin_url}/dashboard/login")
    page.get_by_label("Admin token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{admin_url}/dashboard/")


def test_sign_in_flip_a_flag_and_see_the_audit_entry(browser: Browser, admin_url: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    _sign_in(page, admin_url)
    cookie = next(c for c in context.cookies() if c["name"] == "strangler_admin")
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/dashboard")

    row = page.locator("tr", has=page.get_by_role("link", name=CAP))
    expect(row).to_contain_text("legacy")
    expect(row).to_contain_text("gate met")
    expect(page.locator("#cdc")).to_contain_text("No connectors configured")
    drift = page.locator("#drift")
    expect(drift.get_by_role("heading", name="State drift")).to_be_visible()
    expect(drift.locator("tr.drift-job")).to_have_count(2)
    customers = drift.locator("tr.drift-job", has_text="customers")
    expect(customers).to_contain_text("2")
    expect(customers).to_contain_text("60 min")
    expect(drift.locator("tr.drift-job", has_text="invoices")).to_contain_text("never run")
    stale = drift.locator("tr.drift-entry", has_text="maria@old.example")
    expect(stale).to_be_visible()
    expect(stale).to_contain_text("maria@example.nl")
    expect(drift.locator("tr.drift-entry", has_text="(row)")).to_contain_text("absent")
    page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

    page.get_by_role("link", name=CAP).click()
    expect(page.get_by_role("heading", name="Top diverging fields")).to_be_visible()
    report = httpx.get(f"{admin_url}/report", params={"capability": CAP},
                       headers={"authorization": f"Bearer {TOKEN}"}).json()["capabilities"][0]
    compared = [bucket for bucket in report["timeline"] if bucket["rate"] is not None]
    assert len(compared) >= 20
    expect(page.locator("svg.chart rect.bar")).to_have_count(len(compared))  # a bar per bucket with comparisons
    expect(page.get_by_text("/full_name").first).to_be_visible()
    page.get_by_role("radio", name="shadow").check()
    page.get_by_label("Reason").fill("shadow comparisons clean for an hour (MIG-42)")
    page.get_by_role("button", name="Change mode").click()

    expect(page.get_by_role("status")).to_contain_text("now in mode shadow")
    entry = page.locator("#history tr.audit-entry").first
    expect(entry).to_contain_text("ops")
    expect(entry).to_contain_text("shadow comparisons clean for an hour (MIG-42)")
    expect(entry).to_contain_text("entering shadow is not gated")
    page.screenshot(path=str(ARTIFACTS / "dashboard-capability.png"), full_page=True)

    flags = httpx.get(f"{admin_url}/flags", headers={"authorization": f"Bearer {TOKEN}"}).json()["flags"]
    assert {f["capability"]: f["mode"] for f in flags}[CAP] == "shadow"

    page.goto(f"{admin_url}/dashboard/capabilities/{UNPROVEN}")
    page.get_by_role("radio", name="canary").check()
    page.get_by_label("Canary percent").fill("10")
    page.get_by_label("Reason").fill("try a tenth of the invoices")
    page.get_by_role("button", name="Change mode").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Refused: the gate is not met")
    expect(alert).to_contain_text("0 samples < 200 required")
    expect(page.locator("#history")).to_contain_text("No change recorded yet")
    expect(page.get_by_label("Reason")).to_have_value("try a tenth of the invoices")  # kept for a retry
    page.screenshot(path=str(ARTIFACTS / "dashboard-refused.png"), full_page=True)
    context.close()

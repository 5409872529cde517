from __future__ import annotations

import httpx
import pytest

from strangler.config import StranglerConfig
from strangler.demo.scenario import EXCERPT_CHARS, Step, demo_phases, excerpt, run_step
from strangler.demo.stack import DemoFlags, load_demo_config
from strangler.routing.modes import Mode
from strangler.routing.router import Router

CUSTOMER = {"id": 2, "full_name": "Jonas Weber", "email": "jonas.weber@example.de",
            "correspondence_address": {"street": "Torstrasse 49"}, "updated_at": "2025-06-01T12:00:00Z"}


def _config() -> StranglerConfig:
    return load_demo_config(
        gateway_listen="127.0.0.1:18080", legacy_url="http://127.0.0.1:18001", customers_url="http://127.0.0.1:18002"
    )


def _answering(served_by: str, body: object = CUSTOMER, status: int = 200) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers={"X-Served-By": served_by, "X-Correlation-Id": "cid-1"})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://gateway")


def test_embedded_configuration_is_valid_and_names_the_given_addresses() -> None:
    config = _config()
    assert config.listen == "127.0.0.1:18080"
    assert config.upstreams["legacy"].url == "http://127.0.0.1:18001"
    assert config.upstreams["customers"].url == "http://127.0.0.1:18002"
    assert config.default_upstream == "legacy"
    profile = config.capabilities["customer-profile"]
    assert (profile.legacy, profile.new, profile.mode) == ("legacy", "customers", Mode.LEGACY)
    assert profile.routes == ["GET /customers/{id}", "PUT /customers/{id}/address"]
    assert config.capabilities["policy"].new is None


def test_demo_flags_move_a_capability_between_upstreams() -> None:
    config = _config()
    flags = DemoFlags(config.capabilities)
    router = Router(config.capabilities, flags, config.default_upstream)
    route = router.route("GET", "/customers/1")
    assert route is not None and route.decision.primary == "legacy"
    flag = flags.set("customer-profile", Mode.NEW_ONLY)
    assert flag.version == 1
    route = router.route("GET", "/customers/1")
    assert route is not None and (route.capability, route.decision.primary) == ("customer-profile", "customers")
    policy = router.route("GET", "/policies/501")
    assert policy is not None and policy.decision.primary == "legacy"


async def test_an_exchange_answered_by_the_expected_side_is_ok() -> None:
    config = _config()
    flags = DemoFlags(config.capabilities)
    flags.set("customer-profile", Mode.NEW_ONLY)
    router = Router(config.capabilities, flags, config.default_upstream)
    async with _answering("new-customers") as client:
        exchange = await run_step(client, router, Step("GET", "/customers/2", focus=("full_name",)))
    assert exchange.ok, exchange.problems
    assert (exchange.capability, exchange.upstream, exchange.served_by) == ("customer-profile", "customers",
                                                                           "new-customers")
    assert exchange.correlation_id == "cid-1"
    assert exchange.excerpt == '{"full_name":"Jonas Weber"}'


@pytest.mark.parametrize(
    ("served_by", "step", "problem"),
    [
        ("legacy", Step("GET", "/customers/2"), "answered by legacy, the gateway routed to customers"),
        ("new-customers", Step("GET", "/customers/2", expect_status=404), "status 200, expected 404"),
        ("new-customers", Step("GET", "/customers/2", expect={"correspondence_address": {"street": "Damrak 1"}}),
         'correspondence_address is {"street": "Torstrasse 49"}, expected {"street": "Damrak 1"}'),
    ],
)
async def test_an_unexpected_exchange_is_reported(served_by: str, step: Step, problem: str) -> None:
    config = _config()
    flags = DemoFlags(config.capabilities)
    flags.set("customer-profile", Mode.NEW_ONLY)
    router = Router(config.capabilities, flags, config.default_upstream)
    async with _answering(served_by) as client:
        exchange = await run_step(client, router, step)
    assert not exchange.ok
    assert exchange.problems == (problem,)


def test_excerpt_keeps_the_focus_fields_and_cuts_long_bodies() -> None:
    assert excerpt(CUSTOMER, ("email", "id")) == '{"email":"jonas.weber@example.de","id":2}'
    long = excerpt(list(range(200)))
    assert len(long) == EXCERPT_CHARS and long.endswith("…")


def test_every_demo_phase_sets_customer_profile_and_sends_requests() -> None:
    phases = demo_phases()
    assert [p.modes["customer-profile"] for p in phases] == [Mode.LEGACY, Mode.NEW_ONLY]
    for phase in phases:
        lines = [s.request_line for s in phase.steps]
        assert any(line.startswith("PUT /customers/") for line in lines)
        assert any(line.startswith("GET /policies/") for line in lines)

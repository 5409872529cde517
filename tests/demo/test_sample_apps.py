from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from strangler.demo.domain import InvalidAddress, parse_address, sample_seed
from strangler.demo.legacy import LegacyDatabase, build_legacy_app
from strangler.demo.new_service import CustomerProfile, ProfileStore, build_customer_service, customer_json

NOON = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
MOVED = {"street": "Prinsengracht 263", "postcode": "1016 GV", "city": "Amsterdam", "country": "NL"}


@pytest.fixture
def legacy_db(tmp_path: Path) -> Iterator[LegacyDatabase]:
    db = LegacyDatabase(f"sqlite:///{tmp_path / 'legacy.sqlite'}", clock=lambda: NOON)
    db.install(sample_seed())
    yield db
    db.dispose()


@pytest.fixture
def profiles(tmp_path: Path) -> Iterator[ProfileStore]:
    store = ProfileStore(f"sqlite:///{tmp_path / 'customers.sqlite'}", clock=lambda: NOON)
    store.install(sample_seed().customers)
    yield store
    store.dispose()


def _without_time(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "generated_at"}


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sample")


@pytest.fixture
async def legacy(legacy_db: LegacyDatabase) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(build_legacy_app(legacy_db)) as client:
        yield client


@pytest.fixture
async def new(profiles: ProfileStore) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(build_customer_service(profiles)) as client:
        yield client


async def test_legacy_serves_a_customer(legacy: httpx.AsyncClient) -> None:
    response = await legacy.get("/customers/1")
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "legacy"
    body = response.json()
    assert body.pop("generated_at") > "2025"  # when the read was answered: differs on every call
    assert body == {
        "id": 1,
        "full_name": "Maria van den Berg",
        "email": "maria.vandenberg@example.nl",
        "correspondence_address": {
            "street": "Keizersgracht 123", "postcode": "1015 CJ", "city": "Amsterdam", "country": "NL",
        },
        "updated_at": "2024-03-01T09:30:00Z",
    }


async def test_legacy_address_change_is_stored_and_read_back(legacy: httpx.AsyncClient) -> None:
    changed = await legacy.put("/customers/1/address", json={**MOVED, "country": "nl"})
    assert changed.status_code == 200
    assert changed.json()["correspondence_address"] == MOVED
    assert changed.json()["updated_at"] == "2025-06-01T12:00:00Z"
    read = await legacy.get("/customers/1")
    assert _without_time(read.json()) == changed.json()
    assert (await legacy.get("/customers/2")).json()["correspondence_address"]["city"] == "Berlin"


async def test_legacy_serves_a_policy(legacy: httpx.AsyncClient) -> None:
    response = await legacy.get("/policies/501")
    assert response.status_code == 200
    assert response.json() == {
        "id": 501,
        "policy_number": "HOM-2019-000501",
        "customer_id": 1,
        "product": "home",
        "premium": {"amount": "312.40", "currency": "EUR"},
    }


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/branches", [{"code": "AMS", "name": "Amsterdam Zuid", "city": "Amsterdam"},
                       {"code": "RTM", "name": "Rotterdam Centrum", "city": "Rotterdam"},
                       {"code": "UTR", "name": "Utrecht Oost", "city": "Utrecht"}]),
        ("/health", {"status": "ok"}),
    ],
)
async def test_legacy_serves_routes_outside_any_capability(
    legacy: httpx.AsyncClient, path: str, expected: Any
) -> None:
    response = await legacy.get(path)
    assert response.status_code == 200
    assert response.json() == expected


@pytest.mark.parametrize(
    ("method", "path", "detail"),
    [
        ("GET", "/customers/99", "customer 99 not found"),
        ("PUT", "/customers/99/address", "customer 99 not found"),
        ("GET", "/policies/99", "policy 99 not found"),
    ],
)
async def test_legacy_answers_404_for_unknown_records(
    legacy: httpx.AsyncClient, method: str, path: str, detail: str
) -> None:
    response = await legacy.request(method, path, json=MOVED if method == "PUT" else None)
    assert response.status_code == 404
    assert response.json() == {"detail": detail}
    assert response.headers["x-served-by"] == "legacy"


async def test_unrouted_paths_are_still_marked_with_the_server(legacy: httpx.AsyncClient) -> None:
    response = await legacy.get("/customers/not-a-number")
    assert response.status_code == 404
    assert response.headers["x-served-by"] == "legacy"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"street": "Damrak 1", "postcode": "1012 LG", "city": "Amsterdam"}, "'country' must be a non-empty string"),
        ({**MOVED, "floor": "2"}, "unknown field 'floor'"),
        ({**MOVED, "country": "NLD"}, "'country' must be a two-letter country code, got 'NLD'"),
        ({**MOVED, "street": "   "}, "'street' must be a non-empty string"),
        (["Damrak 1"], "expected a JSON object with street, postcode, city and country"),
        (b"{not json", "the body is not valid JSON"),
    ],
)
@pytest.mark.parametrize("side", ["legacy", "new"])
async def test_invalid_address_changes_are_refused_with_422(
    legacy: httpx.AsyncClient, new: httpx.AsyncClient, side: str, body: Any, detail: str
) -> None:
    client = legacy if side == "legacy" else new
    if isinstance(body, bytes):
        response = await client.put("/customers/1/address", content=body)
    else:
        response = await client.put("/customers/1/address", json=body)
    assert response.status_code == 422
    assert response.json() == {"detail": detail}
    assert (await client.get("/customers/1")).json()["correspondence_address"]["street"] == "Keizersgracht 123"


@pytest.mark.parametrize("customer_id", [c.id for c in sample_seed().customers])
async def test_new_service_serves_the_same_json_as_legacy(
    legacy: httpx.AsyncClient, new: httpx.AsyncClient, customer_id: int
) -> None:
    from_legacy = await legacy.get(f"/customers/{customer_id}")
    from_new = await new.get(f"/customers/{customer_id}")
    assert from_new.status_code == from_legacy.status_code == 200
    assert _without_time(from_new.json()) == _without_time(from_legacy.json())
    assert from_new.headers["x-served-by"] == "new-customers"


async def test_both_sides_change_an_address_alike(legacy: httpx.AsyncClient, new: httpx.AsyncClient) -> None:
    from_legacy = await legacy.put("/customers/2/address", json=MOVED)
    from_new = await new.put("/customers/2/address", json=MOVED)
    assert from_new.status_code == 200
    assert from_new.json() == from_legacy.json()


async def test_new_service_writes_only_its_own_store(
    legacy: httpx.AsyncClient, new: httpx.AsyncClient, profiles: ProfileStore
) -> None:
    await new.put("/customers/3/address", json=MOVED)
    stored = profiles.get(3)
    assert stored is not None and stored.address.street == "Prinsengracht 263"
    assert (await legacy.get("/customers/3")).json()["correspondence_address"]["street"] == "Rua Augusta 80"


@pytest.mark.parametrize(("method", "path"), [("GET", "/customers/42"), ("PUT", "/customers/42/address")])
async def test_new_service_answers_404_for_unknown_customers(new: httpx.AsyncClient, method: str, path: str) -> None:
    response = await new.request(method, path, json=MOVED if method == "PUT" else None)
    assert response.status_code == 404
    assert response.json() == {"detail": "customer 42 not found"}


async def test_new_service_does_not_serve_policies(new: httpx.AsyncClient) -> None:
    response = await new.get("/policies/501")
    assert response.status_code == 404
    assert response.headers["x-served-by"] == "new-customers"


async def test_a_presenter_gives_the_new_service_a_deliberate_difference(profiles: ProfileStore) -> None:
    def shouting(profile: CustomerProfile) -> dict[str, Any]:
        return {**customer_json(profile), "full_name": profile.full_name.upper()}

    async with _client(build_customer_service(profiles, present=shouting)) as client:
        response = await client.get("/customers/2")
        changed = await client.put("/customers/2/address", json=MOVED)
    assert response.json()["full_name"] == "JONAS WEBER"
    assert changed.json()["full_name"] == "JONAS WEBER"
    assert response.json()["email"] == "jonas.weber@example.de"


def test_parse_address_trims_and_upper_cases_the_country() -> None:
    address = parse_address({"street": " Damrak 1 ", "postcode": "1012 LG", "city": "Amsterdam", "country": "nl"})
    assert (address.street, address.country) == ("Damrak 1", "NL")
    with pytest.raises(InvalidAddress):
        parse_address(None)

"""The sample new customer service: the customer-profile capability, carved out of the monolith.

It has its own store and schema (one `full_name`, an `address_*` group) seeded from the same data, and
serves the same JSON as the legacy routes. `present` decides that JSON: pass another presenter to give
the service a deliberate behavioural difference from legacy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, select, update
from sqlalchemy.engine import RowMapping
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from strangler.demo.domain import (
    Address,
    Customer,
    InvalidAddress,
    format_timestamp,
    generated_at,
    parse_address,
    utc_now,
)
from strangler.demo.served_by import ServedByMiddleware

NEW_CUSTOMERS = "new-customers"

_metadata = MetaData()
_profiles = Table(
    "customer_profiles", _metadata,
    Column("customer_id", Integer, primary_key=True),
    Column("full_name", String(120), nullable=False),
    Column("email", String(200), nullable=False),
    Column("address_street", String(200), nullable=False),
    Column("address_postcode", String(20), nullable=False),
    Column("address_city", String(100), nullable=False),
    Column("address_country", String(2), nullable=False),
    Column("updated_at", String(20), nullable=False),
)


@dataclass(frozen=True, slots=True)
class CustomerProfile:
    customer_id: int
    full_name: str
    email: str
    address: Address
    updated_at: str


Presenter = Callable[[CustomerProfile], dict[str, Any]]
# Called after the service changed an address: (profile, correlation id of the request) -> publish its event.
Publisher = Callable[[CustomerProfile, str | None], None]


def customer_json(profile: CustomerProfile) -> dict[str, Any]:
    """The customer JSON legacy serves, field for field."""
    return {
        "id": profile.customer_id,
        "full_name": profile.full_name,
        "email": profile.email,
        "correspondence_address": profile.address.as_json(),
        "updated_at": profile.updated_at,
    }


def _profile(row: RowMapping) -> CustomerProfile:
    return CustomerProfile(
        customer_id=row["customer_id"],
        full_name=row["full_name"],
        email=row["email"],
        address=Address(row["address_street"], row["address_postcode"], row["address_city"], row["address_country"]),
        updated_at=row["updated_at"],
    )


class ProfileStore:
    """The new service's own store of customer profiles (SQLAlchemy Core; the demo uses a SQLite file)."""

    def __init__(self, url: str, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.url = url
        self._engine = create_engine(url)
        self._clock = clock

    def install(self, customers: tuple[Customer, ...]) -> None:
        """Create the table and load `customers` (the one-off migration of the existing data)."""
        _metadata.create_all(self._engine)
        with self._engine.begin() as conn:
            conn.execute(insert(_profiles), [
                {"customer_id": c.id, "full_name": c.full_name, "email": c.email,
                 "address_street": c.address.street, "address_postcode": c.address.postcode,
                 "address_city": c.address.city, "address_country": c.address.country, "updated_at": c.updated_at}
                for c in customers
            ])

    def get(self, customer_id: int) -> CustomerProfile | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_profiles).where(_profiles.c.customer_id == customer_id)).mappings().first()
        return _profile(row) if row else None

    def change_address(self, customer_id: int, address: Address) -> CustomerProfile | None:
        """Store the new address; the updated profile, or None for an unknown customer."""
        with self._engine.begin() as conn:
            changed = conn.execute(
                update(_profiles)
                .where(_profiles.c.customer_id == customer_id)
                .values(address_street=address.street, address_postcode=address.postcode,
                        address_city=address.city, address_country=address.country,
                        updated_at=format_timestamp(self._clock()))
            ).rowcount
            if not changed:
                return None
            row = conn.execute(select(_profiles).where(_profiles.c.customer_id == customer_id)).mappings().one()
        return _profile(row)

    def dispose(self) -> None:
        self._engine.dispose()


def _not_found(customer_id: int) -> JSONResponse:
    return JSONResponse({"detail": f"customer {customer_id} not found"}, status_code=404)


class _ProfileEndpoints:
    def __init__(self, store: ProfileStore, present: Presenter, publish: Publisher | None) -> None:
        self.store = store
        self.present = present
        self.publish = publish

    async def customer(self, request: Request) -> JSONResponse:
        customer_id: int = request.path_params["id"]
        profile = await run_in_threadpool(self.store.get, customer_id)
        if profile is None:
            return _not_found(customer_id)
        return JSONResponse({**self.present(profile), "generated_at": generated_at()})

    async def change_address(self, request: Request) -> JSONResponse:
        customer_id: int = request.path_params["id"]
        try:
            address = parse_address(await request.json())
        except ValueError as exc:  # InvalidAddress, or a body that is not JSON
            detail = str(exc) if isinstance(exc, InvalidAddress) else "the body is not valid JSON"
            return JSONResponse({"detail": detail}, status_code=422)
        profile = await run_in_threadpool(self.store.change_address, customer_id, address)
        if profile is None:
            return _not_found(customer_id)
        if self.publish is not None and request.headers.get("x-strangler-shadow") != "dry-run":
            self.publish(profile, request.headers.get("x-correlation-id"))
        return JSONResponse(self.present(profile))


def build_customer_service(
    store: ProfileStore, *, present: Presenter = customer_json, served_by: str = NEW_CUSTOMERS,
    publish: Publisher | None = None,
) -> Starlette:
    """The new service's HTTP API over `store` (which the caller installs and disposes); `publish` is told of
    every address change it makes (its own domain event)."""
    ep = _ProfileEndpoints(store, present, publish)
    return Starlette(
        routes=[
            Route("/customers/{id:int}", ep.customer, methods=["GET"]),
            Route("/customers/{id:int}/address", ep.change_address, methods=["PUT"]),
        ],
        middleware=[Middleware(ServedByMiddleware, name=served_by)],
    )

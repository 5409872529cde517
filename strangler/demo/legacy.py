"""The sample legacy monolith: an insurer's customers, policies and branches in one SQLite database.

Its schema is the monolith's own (split names, `corr_*` address columns, premiums in cents); the JSON it
serves is the contract the new customer service must keep.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table, create_engine, insert, select, update
from sqlalchemy.engine import RowMapping
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from strangler.demo.domain import (
    Address,
    InvalidAddress,
    SeedData,
    format_timestamp,
    generated_at,
    parse_address,
    utc_now,
)
from strangler.demo.served_by import ServedByMiddleware

LEGACY = "legacy"

_metadata = MetaData()
_customers = Table(
    "customers", _metadata,
    Column("id", Integer, primary_key=True),
    Column("first_name", String(60), nullable=False),
    Column("last_name", String(60), nullable=False),
    Column("email", String(200), nullable=False),
    Column("corr_street", String(200), nullable=False),
    Column("corr_postcode", String(20), nullable=False),
    Column("corr_city", String(100), nullable=False),
    Column("corr_country", String(2), nullable=False),
    Column("updated_at", String(20), nullable=False),
    Column("last_correlation_id", String(128)),  # the request that last changed the row (an audit column)
)
_policies = Table(
    "policies", _metadata,
    Column("id", Integer, primary_key=True),
    Column("policy_number", String(20), nullable=False, unique=True),
    Column("customer_id", Integer, ForeignKey("customers.id"), nullable=False),
    Column("product", String(20), nullable=False),
    Column("premium_cents", Integer, nullable=False),
    Column("currency", String(3), nullable=False),
)
_branches = Table(
    "branches", _metadata,
    Column("code", String(3), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("city", String(100), nullable=False),
)


class LegacyDatabase:
    """The monolith's database (SQLAlchemy Core over any URL; the demo uses a SQLite file)."""

    def __init__(self, url: str, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.url = url
        self._engine = create_engine(url)
        self._clock = clock

    def install(self, seed: SeedData) -> None:
        """Create the tables and load `seed` into them."""
        _metadata.create_all(self._engine)
        with self._engine.begin() as conn:
            conn.execute(insert(_customers), [
                {"id": c.id, "first_name": c.first_name, "last_name": c.last_name, "email": c.email,
                 "corr_street": c.address.street, "corr_postcode": c.address.postcode,
                 "corr_city": c.address.city, "corr_country": c.address.country, "updated_at": c.updated_at}
                for c in seed.customers
            ])
            conn.execute(insert(_policies), [
                {"id": p.id, "policy_number": p.policy_number, "customer_id": p.customer_id, "product": p.product,
                 "premium_cents": int(p.premium * 100), "currency": p.currency}
                for p in seed.policies
            ])
            conn.execute(insert(_branches), [{"code": b.code, "name": b.name, "city": b.city} for b in seed.branches])

    def customer(self, customer_id: int) -> RowMapping | None:
        with self._engine.connect() as conn:
            return conn.execute(select(_customers).where(_customers.c.id == customer_id)).mappings().first()

    def change_address(self, customer_id: int, address: Address, correlation_id: str | None = None
                       ) -> RowMapping | None:
        """Store the new correspondence address; the updated row, or None for an unknown customer."""
        with self._engine.begin() as conn:
            changed = conn.execute(
                update(_customers)
                .where(_customers.c.id == customer_id)
                .values(corr_street=address.street, corr_postcode=address.postcode, corr_city=address.city,
                        corr_country=address.country, updated_at=format_timestamp(self._clock()),
                        last_correlation_id=correlation_id)
            ).rowcount
            if not changed:
                return None
            return conn.execute(select(_customers).where(_customers.c.id == customer_id)).mappings().one()

    def policy(self, policy_id: int) -> RowMapping | None:
        with self._engine.connect() as conn:
            return conn.execute(select(_policies).where(_policies.c.id == policy_id)).mappings().first()

    def branches(self) -> list[RowMapping]:
        with self._engine.connect() as conn:
            return list(conn.execute(select(_branches).order_by(_branches.c.code)).mappings())

    def dispose(self) -> None:
        self._engine.dispose()


def _customer_json(row: RowMapping) -> dict[str, Any]:
    return {
        "id": row["id"],
        "full_name": f"{row['first_name']} {row['last_name']}",
        "email": row["email"],
        "correspondence_address": {
            "street": row["corr_street"], "postcode": row["corr_postcode"],
            "city": row["corr_city"], "country": row["corr_country"],
        },
        "updated_at": row["updated_at"],
    }


def _policy_json(row: RowMapping) -> dict[str, Any]:
    cents = row["premium_cents"]
    return {
        "id": row["id"],
        "policy_number": row["policy_number"],
        "customer_id": row["customer_id"],
        "product": row["product"],
        "premium": {"amount": f"{cents // 100}.{cents % 100:02d}", "currency": row["currency"]},
    }


def _not_found(what: str) -> JSONResponse:
    return JSONResponse({"detail": f"{what} not found"}, status_code=404)


class _LegacyEndpoints:
    def __init__(self, db: LegacyDatabase) -> None:
        self.db = db

    async def customer(self, request: Request) -> JSONResponse:
        customer_id: int = request.path_params["id"]
        row = await run_in_threadpool(self.db.customer, customer_id)
        if not row:
            return _not_found(f"customer {customer_id}")
        return JSONResponse({**_customer_json(row), "generated_at": generated_at()})

    async def change_address(self, request: Request) -> JSONResponse:
        customer_id: int = request.path_params["id"]
        try:
            address = parse_address(await request.json())
        except ValueError as exc:  # InvalidAddress, or a body that is not JSON
            detail = str(exc) if isinstance(exc, InvalidAddress) else "the body is not valid JSON"
            return JSONResponse({"detail": detail}, status_code=422)
        row = await run_in_threadpool(self.db.change_address, customer_id, address,
                                      request.headers.get("x-correlation-id"))
        return JSONResponse(_customer_json(row)) if row else _not_found(f"customer {customer_id}")

    async def policy(self, request: Request) -> JSONResponse:
        policy_id: int = request.path_params["id"]
        row = await run_in_threadpool(self.db.policy, policy_id)
        return JSONResponse(_policy_json(row)) if row else _not_found(f"policy {policy_id}")

    async def branches(self, request: Request) -> JSONResponse:
        rows = await run_in_threadpool(self.db.branches)
        return JSONResponse([{"code": r["code"], "name": r["name"], "city": r["city"]} for r in rows])

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})


def build_legacy_app(db: LegacyDatabase, *, served_by: str = LEGACY) -> Starlette:
    """The monolith's HTTP API over `db` (which the caller installs and disposes)."""
    ep = _LegacyEndpoints(db)
    return Starlette(
        routes=[
            Route("/customers/{id:int}", ep.customer, methods=["GET"]),
            Route("/customers/{id:int}/address", ep.change_address, methods=["PUT"]),
            Route("/policies/{id:int}", ep.policy, methods=["GET"]),
            Route("/branches", ep.branches, methods=["GET"]),
            Route("/health", ep.health, methods=["GET"]),
        ],
        middleware=[Middleware(ServedByMiddleware, name=served_by)],
    )

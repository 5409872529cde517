"""The sample insurer's customer-profile domain: its records, the seed data both sample apps start from,
and the validation of a correspondence address change."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

ADDRESS_FIELDS = ("street", "postcode", "city", "country")


class InvalidAddress(ValueError):
    """A request body that is not a complete correspondence address; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Address:
    street: str
    postcode: str
    city: str
    country: str  # ISO 3166-1 alpha-2

    def as_json(self) -> dict[str, str]:
        return {"street": self.street, "postcode": self.postcode, "city": self.city, "country": self.country}


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    first_name: str
    last_name: str
    email: str
    address: Address
    updated_at: str  # ISO 8601, UTC, seconds

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}"


@dataclass(frozen=True, slots=True)
class Policy:
    id: int
    policy_number: str
    customer_id: int
    product: str
    premium: Decimal
    currency: str


@dataclass(frozen=True, slots=True)
class Branch:
    code: str
    name: str
    city: str


@dataclass(frozen=True, slots=True)
class SeedData:
    customers: tuple[Customer, ...]
    policies: tuple[Policy, ...]
    branches: tuple[Branch, ...]


def sample_seed() -> SeedData:
    """A few customers, their policies and the branches: what both sample databases start with."""
    return SeedData(
        customers=(
            Customer(1, "Maria", "van den Berg", "maria.vandenberg@example.nl",
                     Address("Keizersgracht 123", "1015 CJ", "Amsterdam", "NL"), "2024-03-01T09:30:00Z"),
            Customer(2, "Jonas", "Weber", "jonas.weber@example.de",
                     Address("Hauptstrasse 5", "10115", "Berlin", "DE"), "2024-05-17T14:02:11Z"),
            Customer(3, "Ines", "Marques", "ines.marques@example.pt",
                     Address("Rua Augusta 80", "1100-053", "Lisboa", "PT"), "2023-11-30T08:15:45Z"),
        ),
        policies=(
            Policy(501, "HOM-2019-000501", 1, "home", Decimal("312.40"), "EUR"),
            Policy(502, "MOT-2021-000502", 1, "motor", Decimal("689.00"), "EUR"),
            Policy(503, "TRV-2024-000503", 2, "travel", Decimal("74.95"), "EUR"),
        ),
        branches=(
            Branch("AMS", "Amsterdam Zuid", "Amsterdam"),
            Branch("RTM", "Rotterdam Centrum", "Rotterdam"),
            Branch("UTR", "Utrecht Oost", "Utrecht"),
        ),
    )


def parse_address(payload: object) -> Address:
    """The address in a `PUT /customers/{id}/address` body, or InvalidAddress."""
    if not isinstance(payload, Mapping):
        raise InvalidAddress("expected a JSON object with street, postcode, city and country")
    unknown = sorted(set(payload) - set(ADDRESS_FIELDS))
    if unknown:
        raise InvalidAddress(f"unknown field {unknown[0]!r}")
    values: dict[str, str] = {}
    for name in ADDRESS_FIELDS:
        value = payload.get(name)
        if not isinstance(value, str) or not value.strip():
            raise InvalidAddress(f"{name!r} must be a non-empty string")
        values[name] = value.strip()
    country = values["country"]
    if len(country) != 2 or not country.isalpha():
        raise InvalidAddress(f"'country' must be a two-letter country code, got {country!r}")
    values["country"] = country.upper()
    return Address(**values)


def utc_now() -> datetime:
    return datetime.now(UTC)


def generated_at() -> str:
    """When a read was answered, to the microsecond: both sample apps send it with a customer they read, so it
    differs on every call (the kind of field the shadow comparison learns to treat as noise)."""
    return utc_now().isoformat(timespec="microseconds")


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, to the second: the `updated_at` both sample apps send."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

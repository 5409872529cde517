"""The gateway's part of the configuration: listeners, upstreams, limits, admin tokens."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, ByteSize, Field, SecretStr, field_validator

from strangler.model import ConfigModel as Model


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` -> (host, port); ValueError says what was expected."""
    expected = f"expected HOST:PORT (e.g. 127.0.0.1:8080 or [::1]:8080), got {value!r}"
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
        raise ValueError(expected)
    if host.startswith("[") or host.endswith("]") or ":" in host:
        # an IPv6 address needs brackets, or its last group could be read as the port
        if not (host.startswith("[") and host.endswith("]")):
            raise ValueError(expected)
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{expected}: {host!r} is not an IPv6 address") from None
    elif any(c.isspace() or c in "/[]@" for c in host):
        raise ValueError(expected)
    return host, int(port)


def _listen(value: str) -> str:
    parse_listen(value)
    return value


def _admin_token(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < 16:
        raise ValueError("a token must be at least 16 characters long")
    return value


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"expected an IP address or CIDR network, got {value!r}") from None
    return value


class CircuitBreakerConfig(Model):
    failures: int = Field(5, ge=0, description="consecutive failed calls that open the breaker; 0 turns it off")
    interval: float = Field(3.0, gt=0, description="seconds the breaker stays open before one probe is let through")


class UpstreamConfig(Model):
    url: str
    connect_timeout: float = Field(1.0, gt=0)
    timeout: float = Field(30.0, gt=0, description="seconds to wait for the response or for the next bytes")
    pool_size: int = Field(100, ge=1, description="connections kept to this upstream per worker")
    preserve_host: bool = False
    retries: int = Field(2, ge=0, le=5, description="extra attempts for requests that are safe to retry")
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = urlsplit(value)
        try:
            url.port  # noqa: B018 - raises for a port that is not a number in range
        except ValueError:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}") from None
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        if url.query or url.fragment:
            raise ValueError("an upstream URL cannot have a query or fragment")
        return value


class AdminConfig(Model):
    listen: str = "127.0.0.1:9901"
    # checked one by one, so that an error's key path names the token: admin.tokens.NAME
    tokens: dict[str, Annotated[SecretStr, AfterValidator(_admin_token)]] = Field(default_factory=dict)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _listen(value)


class LimitsConfig(Model):
    max_header_bytes: ByteSize = ByteSize(32 * 1024)
    header_timeout: float = Field(30.0, gt=0, description="seconds a client may take to send a request head")
    max_request_body: ByteSize = ByteSize(100 * 1024 * 1024)
    drain_timeout: float = Field(20.0, ge=0, description="seconds to finish in-flight requests on SIGTERM")
    retry_budget: float = Field(0.2, ge=0, le=1, description="retries allowed as a share of requests")


class AccessLogConfig(Model):
    enabled: bool = False


class GatewayConfigMixin(Model):
    """Top-level keys the gateway reads (merged into the root model)."""

    listen: str = "127.0.0.1:8080"
    workers: int = Field(2, ge=1, le=64)
    admin: AdminConfig = AdminConfig()
    trusted_proxies: list[Annotated[str, AfterValidator(_network)]] = Field(default_factory=list)
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    default_upstream: str | None = None
    limits: LimitsConfig = LimitsConfig()
    access_log: AccessLogConfig = AccessLogConfig()
    path_semicolons: Literal["keep", "reject"] = "keep"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _listen(value)

"""What the dashboard shows of the CDC connectors: their phase, health, lag and throughput.

The connectors run in their own process (`strangler cdc run`), which serves each connector's report as JSON
on `cdc.metrics_listen` (`/healthz`); the dashboard reads that. In-process connectors (the demo) are read
directly. Throughput is the growth of the acknowledged count between two readings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from strangler.cdc.config import CdcConfig
from strangler.gateway.config import parse_listen


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    name: str
    phase: str
    healthy: bool
    reason: str | None = None
    acknowledged: int = 0
    in_flight: int = 0
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    throughput: float | None = None  # acknowledged events per second since the previous reading


@dataclass(frozen=True, slots=True)
class CdcOverview:
    configured: tuple[str, ...] = ()  # connector names in the configuration
    connectors: tuple[ConnectorStatus, ...] = ()
    problem: str | None = None  # why the status could not be read, when it could not
    hint: str | None = None

    @property
    def any_configured(self) -> bool:
        return bool(self.configured or self.connectors)


class CdcStatusSource(Protocol):
    def overview(self) -> CdcOverview:
        """The connectors' current status; may do I/O (called off the event loop), never raises."""
        ...


class _Rates:
    """Acknowledged counts per connector, turned into a rate between consecutive readings."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}

    def rate(self, name: str, acknowledged: int) -> float | None:
        now = self._clock()
        previous = self._last.get(name)
        self._last[name] = (now, acknowledged)
        if previous is None or now <= previous[0] or acknowledged < previous[1]:
            return None
        return (acknowledged - previous[1]) / (now - previous[0])


def _status(report: Mapping[str, Any], rates: _Rates) -> ConnectorStatus:
    name = str(report.get("connector", "?"))
    acknowledged = int(report.get("acknowledged") or 0)
    lag = report.get("lag_seconds")
    lag_bytes = report.get("lag_bytes")
    return ConnectorStatus(
        name=name, phase=str(report.get("phase", "unknown")), healthy=bool(report.get("healthy")),
        reason=report.get("reason"), acknowledged=acknowledged, in_flight=int(report.get("in_flight") or 0),
        lag_seconds=float(lag) if lag is not None else None,
        lag_bytes=int(lag_bytes) if lag_bytes is not None else None,
        throughput=rates.rate(name, acknowledged),
    )


class NoCdcStatus:
    """No connector is configured."""

    def overview(self) -> CdcOverview:
        return CdcOverview()


class HttpCdcStatus:
    """Reads the connectors' reports from the CDC process's status listener (`cdc.metrics_listen`)."""

    def __init__(self, configured: Sequence[str], listen: str, *, timeout: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, transport: httpx.BaseTransport | None = None) -> None:
        host, port = parse_listen(listen)
        if host in ("0.0.0.0", "::", ""):  # a wildcard listener is reached on loopback
            host = "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        self.url = f"http://{host}:{port}/healthz"
        self.configured = tuple(configured)
        self._timeout = timeout
        self._transport = transport
        self._rates = _Rates(clock)

    def overview(self) -> CdcOverview:
        try:
            with httpx.Client(timeout=self._timeout, trust_env=False, transport=self._transport) as client:
                body = client.get(self.url).json()
            reports = body["connectors"]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            return CdcOverview(self.configured, problem=f"cannot read {self.url}: {exc.__class__.__name__}: {exc}")
        return CdcOverview(self.configured, tuple(_status(r, self._rates) for r in reports))


class ConfiguredOnly:
    """Connectors are configured, but nothing says where their status can be read."""

    def __init__(self, configured: Sequence[str]) -> None:
        self.configured = tuple(configured)

    def overview(self) -> CdcOverview:
        return CdcOverview(self.configured, hint="set cdc.metrics_listen so that the dashboard can read the "
                                                 "connectors' lag and throughput from `strangler cdc run`")


class LocalCdcStatus:
    """Connectors running in this process (anything with `name` and `report()`, like `cdc.connector.Connector`)."""

    def __init__(self, connectors: Iterable[Any], *, clock: Callable[[], float] = time.monotonic) -> None:
        self.connectors = list(connectors)
        self._rates = _Rates(clock)

    def overview(self) -> CdcOverview:
        return CdcOverview(tuple(c.name for c in self.connectors),
                           tuple(_status(c.report(), self._rates) for c in self.connectors))


def cdc_status_for(cdc: CdcConfig | None) -> CdcStatusSource:
    """The status source the configuration allows: none, names only, or the CDC process's listener."""
    if cdc is None or not cdc.connectors:
        return NoCdcStatus()
    if cdc.metrics_listen is None:
        return ConfiguredOnly(list(cdc.connectors))
    return HttpCdcStatus(list(cdc.connectors), cdc.metrics_listen)

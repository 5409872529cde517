"""Errors of the gateway's upstream side, translated from the HTTP client at the edge.

    UpstreamError
    ├── UpstreamUnavailable   connection refused or reset, bad response           -> 502
    │   └── ConnectFailed     nothing was sent: always safe to try again
    ├── UpstreamTimeout       no answer within connect_timeout / timeout          -> 504
    └── CircuitOpen           the upstream kept failing: refused without a call   -> 503
"""

from __future__ import annotations

from strangler.errors import StranglerError


class UpstreamError(StranglerError):
    status = 502


class UpstreamUnavailable(UpstreamError):
    status = 502


class ConnectFailed(UpstreamUnavailable):
    """The connection could not be made: no byte of the request reached the upstream."""


class UpstreamTimeout(UpstreamError):
    status = 504


class CircuitOpen(UpstreamError):
    """The upstream's circuit breaker is open: the request was not sent (see `breaker.py`)."""

    status = 503


class BodyTooLarge(StranglerError):
    """The client's request body exceeds the limit of its capability."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit

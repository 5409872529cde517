"""The inline HTTP proxy, its upstream client, the admin listener and the server process model."""

from __future__ import annotations

from strangler.gateway.client import Http1UpstreamClient
from strangler.gateway.proxy import ProxyApp
from strangler.gateway.upstream import UpstreamClient, UpstreamRequest

__all__ = ["Http1UpstreamClient", "ProxyApp", "UpstreamClient", "UpstreamRequest"]

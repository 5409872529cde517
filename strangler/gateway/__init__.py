"""The inline HTTP proxy, its upstream client, the admin listener and the server process model."""

from __future__ import annotations

from strangler.gateway.proxy import ProxyApp
from strangler.gateway.upstream import AiohttpUpstreamClient, UpstreamClient, UpstreamRequest

__all__ = ["AiohttpUpstreamClient", "ProxyApp", "UpstreamClient", "UpstreamRequest"]

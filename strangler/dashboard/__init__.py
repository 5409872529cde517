"""The web dashboard on the admin listener: capabilities with their gates and flip controls, divergence over
time, CDC connectors, maturity lags and the audit history, server-rendered."""

from __future__ import annotations

from strangler.dashboard.cdc_status import (
    CdcOverview,
    CdcStatusSource,
    ConnectorStatus,
    HttpCdcStatus,
    LocalCdcStatus,
    NoCdcStatus,
    cdc_status_for,
)
from strangler.dashboard.routes import dashboard_routes
from strangler.dashboard.views import DashboardSources

__all__ = [
    "CdcOverview", "CdcStatusSource", "ConnectorStatus", "DashboardSources", "HttpCdcStatus", "LocalCdcStatus",
    "NoCdcStatus", "cdc_status_for", "dashboard_routes",
]

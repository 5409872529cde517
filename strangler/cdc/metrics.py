"""CDC metrics (prometheus-client) and the small HTTP listener that serves them with /healthz.

The connector loop counts in plain integers and folds them into these metrics a few times a second, so that
the per-change path pays no label lookups.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest


class CdcMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter("strangler_cdc_events", "Change events emitted", ["connector", "table", "op"],
                              registry=registry)
        self.lag_seconds = Gauge("strangler_cdc_lag_seconds", "Now minus the commit time of the newest "
                                 "acknowledged change (0 when caught up)", ["connector"], registry=registry)
        self.lag_bytes = Gauge("strangler_cdc_lag_bytes", "Server WAL position minus the slot's confirmed "
                               "position", ["connector"], registry=registry)
        self.lag_warning = Gauge("strangler_cdc_lag_warning", "1 when lag_bytes exceeds lag_warning_bytes",
                                 ["connector"], registry=registry)
        self.sink_errors = Counter("strangler_cdc_sink_errors", "Sink failures (each rewinds the connector)",
                                   ["connector"], registry=registry)
        self.source_errors = Counter("strangler_cdc_source_errors", "Source failures (each reconnects)",
                                     ["connector"], registry=registry)
        self.duplicates = Counter("strangler_cdc_duplicates", "Changes re-emitted after a restart that the sink "
                                  "had already acknowledged", ["connector"], registry=registry)
        self.acknowledged = Counter("strangler_cdc_acknowledged", "Records the sink acknowledged",
                                    ["connector"], registry=registry)
        self.mapped = Counter("strangler_cdc_mapped", "Changes mapped in-process whose domain events and dead "
                              "letters were all acknowledged", ["connector"], registry=registry)
        self.in_flight = Gauge("strangler_cdc_in_flight", "Records sent, not yet acknowledged", ["connector"],
                               registry=registry)
        self.healthy = Gauge("strangler_cdc_healthy", "1 when the connector is delivering", ["connector"],
                             registry=registry)
        self.snapshot_rows = Gauge("strangler_cdc_snapshot_rows", "Snapshot rows acknowledged", ["connector"],
                                   registry=registry)
        self.snapshot_total = Gauge("strangler_cdc_snapshot_rows_estimated", "Rows the snapshot will read "
                                    "(the catalog's estimate)", ["connector"], registry=registry)
        self._counted: dict[tuple[str, str, str], int] = {}

    def fold_counts(self, connector: str, counts: dict[tuple[str, str], int]) -> None:
        """Bring the event counters up to `counts` (cumulative per table and op)."""
        for (table, op), total in counts.items():
            key = (connector, table, op)
            seen = self._counted.get(key, 0)
            if total > seen:
                self.events.labels(connector, table, op).inc(total - seen)
                self._counted[key] = total

    def forget_counts(self, connector: str) -> None:
        """A new session counts from zero again."""
        for key in [k for k in self._counted if k[0] == connector]:
            self._counted[key] = 0


class MetricsServer:
    """/metrics (Prometheus text) and /healthz (200 or 503 with each connector's state) on one listener."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 health: Callable[[], dict[str, Any]]) -> None:
        registry_, health_ = registry, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.startswith("/metrics"):
                    body, status, kind = generate_latest(registry_), 200, CONTENT_TYPE_LATEST
                elif self.path.startswith("/healthz"):
                    report = health_()
                    status = 200 if report["healthy"] else 503
                    body, kind = json.dumps(report).encode(), "application/json"
                else:
                    body, status, kind = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="cdc-metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

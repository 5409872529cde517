"""`strangler cdc run`: the composition root. Builds each connector from the configuration, runs it in its
own thread until SIGTERM or SIGINT (which flush the sink and confirm before exit), serves metrics."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from strangler.cdc.config import CdcConfig, ConnectorConfig
from strangler.cdc.connector import Connector
from strangler.cdc.errors import CdcError
from strangler.cdc.metrics import CdcMetrics, MetricsServer
from strangler.cdc.ports import ChangeMapping, ChangeSource, EventSink
from strangler.cdc.state import StateFile

log = logging.getLogger("strangler.cdc")


def state_path(name: str, connector: ConnectorConfig, cdc: CdcConfig) -> Path:
    return Path(connector.state_path) if connector.state_path else Path(cdc.state_dir) / f"{name}.json"


def topic_prefix(name: str, connector: ConnectorConfig) -> str:
    return connector.sink.topic_prefix or name


def make_source(name: str, connector: ConnectorConfig, cdc: CdcConfig) -> Callable[[], ChangeSource]:
    state = StateFile(state_path(name, connector, cdc))
    prefix, schemas, source = topic_prefix(name, connector), connector.sink.schemas, connector.source
    if source.kind == "postgres":
        from strangler.cdc.postgres import PostgresSource

        return lambda: PostgresSource(source, name=prefix, schemas=schemas, state=state)
    from strangler.cdc.sqlite import SqliteSource

    return lambda: SqliteSource(source, name=prefix, connector=name, schemas=schemas, state=state)


def make_sink(name: str, connector: ConnectorConfig) -> Callable[[], EventSink]:
    sink = connector.sink
    if sink.kind == "kafka":
        from strangler.cdc.kafka import KafkaSink, producer_settings

        producer_settings(sink, name)  # refuse unsafe settings before anything starts
        return lambda: KafkaSink(sink, client_id=f"strangler-cdc-{name}")
    from strangler.cdc.jsonl import JsonlSink

    return lambda: JsonlSink(sink)


def make_mapping(name: str, connector: ConnectorConfig, cdc: CdcConfig) -> Callable[[], ChangeMapping] | None:
    """The in-process domain-event mapping of a connector with `map_domain_events`, None without."""
    events = cdc.domain_events
    if not connector.map_domain_events or events is None:
        return None
    from strangler.cdc.mapping import PipelineMapping
    from strangler.events.runner import build_pipeline

    client_id = {"client.id": f"strangler-cdc-{name}-events"}
    return lambda: PipelineMapping(lambda: build_pipeline(events, producer=client_id), connector=name)


def build_connector(name: str, connector: ConnectorConfig, cdc: CdcConfig, metrics: CdcMetrics) -> Connector:
    source, sink = connector.source, connector.sink
    heartbeat = None
    if sink.kind == "kafka" and source.heartbeat_interval > 0:
        prefix = topic_prefix(name, connector)
        heartbeat = (f"{sink.heartbeat_topic_prefix}.{prefix}", prefix)
    return Connector(name, connector, make_source=make_source(name, connector, cdc),
                     make_sink=make_sink(name, connector), metrics=metrics, heartbeat=heartbeat,
                     heartbeat_interval=source.heartbeat_interval, lag_warning_bytes=source.lag_warning_bytes,
                     make_mapping=make_mapping(name, connector, cdc), publish_changes=connector.publish_change_events)


def run_connectors(
    cdc: CdcConfig,
    names: list[str],
    *,
    show: Callable[[list[Connector], bool], Any] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the named connectors until stopped; 0 on a clean stop, 1 if a connector failed for good."""
    stop = stop or threading.Event()
    registry = CollectorRegistry()
    metrics = CdcMetrics(registry)
    connectors = [build_connector(name, cdc.connectors[name], cdc, metrics) for name in names]
    failures: dict[str, BaseException] = {}

    def health() -> dict[str, Any]:
        reports = [c.report() for c in connectors]
        return {"healthy": all(r["healthy"] or r["phase"] == "done" for r in reports), "connectors": reports}

    server = None
    if cdc.metrics_listen:
        from strangler.gateway.config import parse_listen

        host, port = parse_listen(cdc.metrics_listen)
        server = MetricsServer(host, port, registry, health).start()

    def guarded(connector: Connector) -> None:
        try:
            connector.run(stop)
        except Exception as exc:  # noqa: BLE001 - reported below, with the connector's name
            failures[connector.name] = exc
            log.error("cdc %s: %s", connector.name, exc, exc_info=not isinstance(exc, CdcError))

    threads = [threading.Thread(target=guarded, args=(c,), name=f"cdc-{c.name}", daemon=True) for c in connectors]
    previous = _install_signals(stop)
    try:
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            if show is not None:
                show(connectors, False)
            stop.wait(0.5)
        if show is not None:
            show(connectors, True)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        _restore_signals(previous)
        if server is not None:
            server.stop()
    for name, exc in failures.items():
        print(f"error: connector {name}: {exc}", file=sys.stderr)
    return 1 if failures else 0


def _install_signals(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda signum, frame: stop.set())
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


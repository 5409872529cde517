"""The demo's running parts, all in the current asyncio loop on free loopback ports: the sample legacy monolith
and the sample new customer service (each with its own SQLite file), the gateway's proxy and admin API as
`strangler serve` builds them (`strangler.app`), the SQLite CDC connector writing JSON Lines, and the relay
that carries its events through the domain-event mapper to the outcome comparison."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from prometheus_client import CollectorRegistry, generate_latest

from strangler.app import build_admin, build_proxy
from strangler.cdc.connector import Connector
from strangler.cdc.metrics import CdcMetrics
from strangler.cdc.runner import build_connector
from strangler.config import StranglerConfig, load_config_text
from strangler.dashboard import LocalCdcStatus
from strangler.demo.domain import sample_seed
from strangler.demo.errors import DemoFailed
from strangler.demo.legacy import LegacyDatabase, build_legacy_app
from strangler.demo.new_service import CustomerProfile, ProfileStore, build_customer_service, customer_json
from strangler.demo.relay import EventRelay
from strangler.events.runner import build_pipeline
from strangler.gateway.proxy import ProxyApp
from strangler.gateway.server import _QuietServer, uvicorn_config
from strangler.store import upgrade_schema

CONFIG_RESOURCE = "demo.yaml"
CONNECTOR = "legacy-crm"
_START_TIMEOUT = 5.0


def title_case(name: str) -> str:
    return " ".join(word.capitalize() for word in name.split())


class NewServiceRelease:
    """Which release of the new customer service is deployed. Release 1 has the deliberate behavioural
    difference: it title-cases names, so "Maria van den Berg" comes out as "Maria Van Den Berg". Release 2
    fixes it."""

    def __init__(self) -> None:
        self.version = 1

    def present(self, profile: CustomerProfile) -> dict[str, Any]:
        body = customer_json(profile)
        if self.version == 1:
            body["full_name"] = title_case(profile.full_name)
        return body


@dataclass(frozen=True, slots=True)
class DemoStack:
    """Where the running demo can be reached, and the handles the walkthrough steers it with."""

    gateway_url: str
    admin_url: str
    legacy_url: str
    new_service_url: str
    token: str
    workdir: Path
    config: StranglerConfig
    proxy: ProxyApp
    release: NewServiceRelease
    relay: EventRelay
    connector: Connector

    @property
    def legacy_db(self) -> Path:
        return self.workdir / "legacy.sqlite"

    @property
    def new_service_db(self) -> Path:
        return self.workdir / "customers.sqlite"


def load_demo_config(*, workdir: Path, gateway_listen: str, admin_listen: str, token: str, legacy_url: str,
                     customers_url: str) -> StranglerConfig:
    """The embedded demo configuration with the given addresses, validated like any configuration file."""
    text = resources.files("strangler.demo").joinpath(CONFIG_RESOURCE).read_text(encoding="utf-8")
    env = {"DEMO_GATEWAY_LISTEN": gateway_listen, "DEMO_ADMIN_LISTEN": admin_listen, "DEMO_ADMIN_TOKEN": token,
           "DEMO_WORKDIR": str(workdir), "DEMO_LEGACY_URL": legacy_url, "DEMO_CUSTOMERS_URL": customers_url}
    return load_config_text(text, source=f"strangler/demo/{CONFIG_RESOURCE}", env=env)


def _loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


def _app_server(app: Any, lifespan: Literal["on", "off"] = "on") -> uvicorn.Server:
    return _QuietServer(
        uvicorn.Config(app, loop="asyncio", lifespan=lifespan, log_config=None, log_level="warning",
                       access_log=False, timeout_graceful_shutdown=1)
    )


class _Servers:
    """uvicorn servers running as tasks in this loop; stopped in the reverse order of their start."""

    def __init__(self) -> None:
        self._running: list[tuple[str, uvicorn.Server, asyncio.Task[None]]] = []

    async def start(self, name: str, server: uvicorn.Server, sock: socket.socket) -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"demo-{name}")
        self._running.append((name, server, task))
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT
        while not server.started:
            if task.done():
                exc = None if task.cancelled() else task.exception()
                raise DemoFailed(f"the {name} server did not start: {exc or 'its startup failed'}")
            if asyncio.get_running_loop().time() > deadline:
                raise DemoFailed(f"the {name} server did not start within {_START_TIMEOUT:g} s")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        while self._running:
            _, server, task = self._running.pop()
            server.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task


async def _streaming(connector: Connector, thread: threading.Thread) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_TIMEOUT
    while connector.phase != "streaming":
        if not thread.is_alive() or loop.time() > deadline:
            raise DemoFailed(f"the CDC connector did not start: {connector.reason or connector.phase}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def run_stack(workdir: Path) -> AsyncIterator[DemoStack]:
    """Start everything (its files in `workdir`); stop all on exit."""
    socks = {name: _loopback_socket() for name in ("legacy", "new", "gateway", "admin")}
    servers = _Servers()
    cleanups: list[Any] = []
    stop_cdc = threading.Event()
    admin_parts = None
    try:
        token = "demo-" + secrets.token_hex(12)
        config = load_demo_config(
            workdir=workdir, gateway_listen=_url(socks["gateway"])[7:], admin_listen=_url(socks["admin"])[7:],
            token=token, legacy_url=_url(socks["legacy"]), customers_url=_url(socks["new"]))
        seed = sample_seed()
        legacy_db = LegacyDatabase(f"sqlite:///{workdir / 'legacy.sqlite'}")
        cleanups.append(legacy_db.dispose)
        legacy_db.install(seed)
        profiles = ProfileStore(f"sqlite:///{workdir / 'customers.sqlite'}")
        cleanups.append(profiles.dispose)
        profiles.install(seed.customers)
        await asyncio.to_thread(upgrade_schema, config.store)

        if config.cdc is None or config.cdc.domain_events is None:
            raise DemoFailed(f"{CONFIG_RESOURCE} configures no change capture")
        connector = build_connector(CONNECTOR, config.cdc.connectors[CONNECTOR], config.cdc,
                                    CdcMetrics(CollectorRegistry()))
        cdc_thread = threading.Thread(target=connector.run, args=(stop_cdc,), name="demo-cdc", daemon=True)
        cdc_thread.start()
        cleanups.append(lambda: cdc_thread.join(10))
        await _streaming(connector, cdc_thread)

        proxy_registry, admin_registry = CollectorRegistry(), CollectorRegistry()
        proxy = build_proxy(config, proxy_registry)
        admin_parts = build_admin(
            config, metrics=lambda: generate_latest(proxy_registry) + generate_latest(admin_registry),
            workers_ready=lambda: (True, {"workers": {"alive": 1, "configured": 1}}), registry=admin_registry,
            cdc_status=LocalCdcStatus([connector]))
        for part in admin_parts.lifecycle:
            await part.start()
        admin_url = _url(socks["admin"])
        admin_client = httpx.AsyncClient(base_url=admin_url, headers={"authorization": f"Bearer {token}"},
                                          timeout=10.0, trust_env=False)
        relay = EventRelay(changes=workdir / "changes.jsonl", events=workdir / "events.jsonl",
                           legacy_db=workdir / "legacy.sqlite",
                           changelog_table=config.cdc.connectors[CONNECTOR].source.changelog_table,
                           pipeline=build_pipeline(config.cdc.domain_events), admin=admin_client, profiles=profiles)
        release = NewServiceRelease()

        await servers.start("legacy", _app_server(build_legacy_app(legacy_db)), socks["legacy"])
        new_app = build_customer_service(profiles, present=release.present, publish=relay.publish_new)
        await servers.start("new customer service", _app_server(new_app), socks["new"])
        await servers.start("gateway", _QuietServer(uvicorn_config(proxy, config, loop="asyncio", log_config=None)),
                            socks["gateway"])
        await servers.start("admin", _app_server(admin_parts.app, lifespan="off"), socks["admin"])
        await relay.start()
        try:
            yield DemoStack(
                gateway_url=_url(socks["gateway"]), admin_url=admin_url, legacy_url=_url(socks["legacy"]),
                new_service_url=_url(socks["new"]), token=token, workdir=workdir, config=config, proxy=proxy,
                release=release, relay=relay, connector=connector)
        finally:
            await relay.stop()
            await admin_client.aclose()
    finally:
        await servers.stop()
        if admin_parts is not None:
            for part in reversed(admin_parts.lifecycle):
                with contextlib.suppress(Exception):
                    await part.stop()
        stop_cdc.set()
        for cleanup in reversed(cleanups):
            cleanup()
        for sock in socks.values():
            sock.close()

"""The demo's running parts: the sample legacy monolith, the sample new customer service and the gateway
in front, each a uvicorn server on a free loopback port, all in the current asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import uvicorn

from strangler.config import StranglerConfig, load_config_text
from strangler.demo.domain import sample_seed
from strangler.demo.errors import DemoFailed
from strangler.demo.legacy import LegacyDatabase, build_legacy_app
from strangler.demo.new_service import ProfileStore, build_customer_service
from strangler.gateway.proxy import ProxyApp
from strangler.gateway.server import _QuietServer, uvicorn_config
from strangler.routing.config import CapabilityConfig
from strangler.routing.modes import Mode, RoutingFlag

CONFIG_RESOURCE = "demo.yaml"
_START_TIMEOUT = 5.0


class DemoFlags:
    """An in-memory `FlagSource` the demo flips between phases, starting from the configured modes."""

    def __init__(self, capabilities: Mapping[str, CapabilityConfig]) -> None:
        self._flags = {name: RoutingFlag(cap.mode, cap.percent, 0) for name, cap in capabilities.items()}

    def flag(self, capability: str) -> RoutingFlag:
        return self._flags[capability]

    def set(self, capability: str, mode: Mode, percent: float = 0.0) -> RoutingFlag:
        flag = RoutingFlag(mode, percent, self._flags[capability].version + 1)
        self._flags[capability] = flag
        return flag


@dataclass(frozen=True, slots=True)
class DemoStack:
    """Where the running demo can be reached, and the handles the runner steers it with."""

    gateway_url: str
    legacy_url: str
    new_service_url: str
    legacy_db: Path
    new_service_db: Path
    proxy: ProxyApp
    flags: DemoFlags


def load_demo_config(*, gateway_listen: str, legacy_url: str, customers_url: str) -> StranglerConfig:
    """The embedded demo configuration with the given addresses, validated like any configuration file."""
    text = resources.files("strangler.demo").joinpath(CONFIG_RESOURCE).read_text(encoding="utf-8")
    env = {"DEMO_GATEWAY_LISTEN": gateway_listen, "DEMO_LEGACY_URL": legacy_url, "DEMO_CUSTOMERS_URL": customers_url}
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


def _app_server(app: Any) -> uvicorn.Server:
    return _QuietServer(
        uvicorn.Config(app, loop="asyncio", lifespan="on", log_config=None, log_level="warning",
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


@contextlib.asynccontextmanager
async def run_stack(workdir: Path) -> AsyncIterator[DemoStack]:
    """Start both sample apps (their SQLite files in `workdir`) and the gateway; stop all on exit."""
    legacy_sock, new_sock, gateway_sock = _loopback_socket(), _loopback_socket(), _loopback_socket()
    servers = _Servers()
    disposals: list[Any] = []
    try:
        host, port = gateway_sock.getsockname()[:2]
        config = load_demo_config(
            gateway_listen=f"{host}:{port}", legacy_url=_url(legacy_sock), customers_url=_url(new_sock)
        )
        seed = sample_seed()
        legacy_path, new_path = workdir / "legacy.sqlite", workdir / "customers.sqlite"
        legacy_db = LegacyDatabase(f"sqlite:///{legacy_path}")
        disposals.append(legacy_db.dispose)
        legacy_db.install(seed)
        profiles = ProfileStore(f"sqlite:///{new_path}")
        disposals.append(profiles.dispose)
        profiles.install(seed.customers)
        flags = DemoFlags(config.capabilities)
        proxy = ProxyApp(config, flags=flags)
        await servers.start("legacy", _app_server(build_legacy_app(legacy_db)), legacy_sock)
        await servers.start("new customer service", _app_server(build_customer_service(profiles)), new_sock)
        gateway = _QuietServer(uvicorn_config(proxy, config, loop="asyncio", log_config=None))
        await servers.start("gateway", gateway, gateway_sock)
        yield DemoStack(
            gateway_url=_url(gateway_sock),
            legacy_url=_url(legacy_sock),
            new_service_url=_url(new_sock),
            legacy_db=legacy_path,
            new_service_db=new_path,
            proxy=proxy,
            flags=flags,
        )
    finally:
        await servers.stop()
        for dispose in reversed(disposals):
            dispose()
        for sock in (legacy_sock, new_sock, gateway_sock):
            sock.close()

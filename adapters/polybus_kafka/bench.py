"""Raw confluent-kafka baseline for ``polybus bench kafka``.

The same guarantees and the same work as the SDK, no less and no more:

* publish: idempotent producer with ``acks=all``, the same partitioner and linger, the
  keyless records spread round-robin over the partitions as the SDK spreads them; a
  publish produces its batch and ``flush``es in the calling thread (what a plain
  script or kombu does: the fastest way to have a batch confirmed with this client,
  no thread hop at all), then checks every delivery report of the batch.
* consume: the same consumer settings (so the same librdkafka prefetch), records taken
  in batches with ``consume(n, timeout)``; each record is received (its value read) and
  acked at-least-once style: its offset is stored only after it was received
  (``store_offsets``, with ``enable.auto.offset.store=false``), and the stored offsets
  are committed asynchronously once per batch, as the SDK commits settled positions
  once per fetch-thread turn. Nothing is committed before it was received.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from polybus.bench import RawBaseline
from polybus.errors import PublishError

from . import _admin
from ._consumer import consumer_config
from ._publisher import producer_config
from ._records import kafka_topic
from ._settings import KafkaSettings, parse

IDLE_TIMEOUT = 30.0


class RawKafka:
    """:class:`~polybus.bench.RawBaseline` with confluent-kafka alone."""

    def __init__(self) -> None:
        self._settings: KafkaSettings | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._topic = ""
        self._partitions: list[int] = []
        self._turn = 0

    async def setup(self, url: str, topic: str, group: str) -> None:
        settings = parse(url, {})
        self._settings = settings
        topic = kafka_topic(topic)  # the Kafka topic the SDK side's name maps to
        self._topic = topic
        admin = AdminClient(settings.common("admin"))
        parts = await asyncio.to_thread(
            _admin.ensure_topic,
            admin,
            topic,
            partitions=settings.topic_partitions,
            replication_factor=settings.replication_factor,
            strict_partitions=False,
            timeout=settings.connect_timeout,
        )
        await asyncio.to_thread(
            _admin.ensure_group, admin, topic, group, parts, settings.connect_timeout
        )
        self._partitions = parts
        self._producer = Producer(producer_config(settings))
        conf = consumer_config(settings, group)
        self._consumer = Consumer(conf)
        self._consumer.subscribe([topic])

    async def publish(self, bodies: list[bytes]) -> None:
        producer = self._need(self._producer)
        failed: list[Any] = []
        reported = [0]

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(err)
            reported[0] += 1

        parts, turn = self._partitions, self._turn
        count = len(parts)
        produce = producer.produce
        for body in bodies:
            partition = parts[turn % count]
            turn += 1
            while True:
                try:
                    produce(self._topic, value=body, partition=partition, on_delivery=report)
                    break
                except BufferError:
                    producer.poll(0.005)
        self._turn = turn % count
        producer.flush(30.0)  # blocks the loop, as a synchronous client does
        if failed or reported[0] != len(bodies):
            raise PublishError(f"raw publish failed: {failed[:1]}", retryable=True)

    async def consume(self, count: int) -> None:
        await asyncio.to_thread(self._consume, count)

    def _consume(self, count: int) -> None:
        consumer = self._need(self._consumer)
        got = 0
        deadline = time.monotonic() + IDLE_TIMEOUT
        store = consumer.store_offsets
        while got < count:
            batch = consumer.consume(min(500, count - got), 0.1)
            received = 0
            for record in batch:
                if record.error() is None:
                    record.value()  # receive it, as the SDK does for every message
                    store(message=record)  # the ack: only after it was received
                    received += 1
            if received:
                got += received
                consumer.commit(asynchronous=True)  # the stored offsets
                deadline = time.monotonic() + IDLE_TIMEOUT
            elif time.monotonic() > deadline:
                raise TimeoutError(f"raw consume: {got} of {count} in {IDLE_TIMEOUT} s")

    async def round_trip(self, body: bytes) -> None:
        await self.publish([body])
        await self.consume(1)

    async def teardown(self) -> None:
        if self._consumer is not None:
            await asyncio.to_thread(self._consumer.close)
        if self._producer is not None:
            await asyncio.to_thread(self._producer.flush, 10.0)

    @staticmethod
    def _need(client: Any) -> Any:
        if client is None:
            raise RuntimeError("raw baseline used before setup()")
        return client


def raw_baseline() -> RawBaseline:
    return RawKafka()

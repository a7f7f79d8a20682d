"""``kafka://host:port[,host:port...]``: the Kafka adapter on confluent-kafka.

Topology: a polybus topic is a Kafka topic (created with ``partitions`` and
``replication_factor``), a group is a consumer group, the key is the record key and
picks the partition (murmur2, as the Java client does). The producer is idempotent
with ``acks=all``; a publish returns after the delivery report of every message of
the batch (one flush per batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from polybus.capabilities import Capabilities, Ordering
from polybus.errors import PublishError
from polybus.spi import Adapter, Consumer, Envelope, GroupSettings

from . import _admin, _records
from ._consumer import KafkaConsumer
from ._errors import publish_error
from ._settings import RECORD_OVERHEAD, KafkaSettings, parse

log = logging.getLogger("polybus.kafka")

_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def capabilities(settings: KafkaSettings) -> Capabilities:
    """What Kafka gives, as this adapter uses it (see README.md for the reasons)."""
    return Capabilities(
        ordering=Ordering.PER_KEY,
        fan_out=True,
        competing_consumers=True,
        persistent=True,
        replay=True,
        native_delivery_count=False,
        native_dead_letter=False,
        delayed_redelivery=True,
        broker_dedup=False,
        max_message_size=settings.max_message_size,
    )


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    return {
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "allow.auto.create.topics": False,
        "message.max.bytes": settings.max_message_size + RECORD_OVERHEAD,
        "logger": logging.getLogger("polybus.kafka.librdkafka"),
        **settings.common("producer"),
    }


class KafkaAdapter(Adapter):
    """The Kafka backend. Publishes and declares through one producer and one admin
    client per Bus; each subscription has its own consumer and fetch thread."""

    name = "kafka"

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.capabilities = capabilities(settings)
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._partitions: dict[str, list[int]] = {}
        self._groups: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"<KafkaAdapter {self.redacted_url()}>"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> KafkaAdapter:
        return cls(parse(url, options))

    def redacted_url(self) -> str:
        return f"kafka://{self.settings.bootstrap_servers}"

    async def open(self) -> None:
        if self._producer is not None:
            return
        native_log = logging.getLogger("polybus.kafka.librdkafka")
        admin_conf: dict[str, Any] = {"logger": native_log, **self.settings.common("admin")}
        admin = AdminClient(admin_conf)
        await asyncio.to_thread(_admin.probe, admin, self.settings.connect_timeout)
        self._admin = admin
        self._producer = Producer(producer_config(self.settings))

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        self._admin = None
        if producer is not None:
            left = await asyncio.to_thread(producer.flush, self.settings.publish_timeout)
            if left:
                log.error("closed with %d messages not confirmed by the broker", left)

    async def ensure_topic(self, topic: str) -> None:
        if topic in self._partitions:
            return
        admin = self._admin_client()
        s = self.settings
        self._partitions[topic] = await asyncio.to_thread(
            _admin.ensure_topic,
            admin,
            topic,
            partitions=s.topic_partitions,
            replication_factor=s.replication_factor,
            strict_partitions=s.partitions is not None,
            timeout=s.connect_timeout,
        )

    async def ensure_group(self, topic: str, group: str, settings: GroupSettings) -> None:
        # Kafka has no broker-side delivery limit: settings.max_deliveries is enforced by
        # polybus's poison-pill middleware with the attempts this adapter tracks.
        if (topic, group) in self._groups:
            return
        await self.ensure_topic(topic)
        await asyncio.to_thread(
            _admin.ensure_group,
            self._admin_client(),
            topic,
            group,
            self._partitions[topic],
            self.settings.connect_timeout,
        )
        self._groups.add((topic, group))

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        producer = self._producer
        if producer is None:
            raise PublishError("the Kafka adapter is not open", retryable=False)
        reports = _Reports(asyncio.get_running_loop())
        failure: PublishError | None = None
        produce = producer.produce
        record_headers = _records.record_headers
        report = reports.report
        millis = _records.Timestamps().millis
        sent = 0
        for env in envelopes:
            headers = record_headers(env)
            try:
                while True:
                    try:
                        produce(
                            topic,
                            env.body,
                            env.key,
                            headers=headers,
                            timestamp=millis(env.published_at),
                            on_delivery=partial(report, sent),
                        )
                        break
                    except BufferError:
                        # librdkafka's local queue is full: let deliveries drain, retry
                        await asyncio.to_thread(producer.poll, 0.1)
            except KafkaException as exc:
                failure = publish_error(
                    exc.args[0],
                    topic,
                    failed_ids=tuple(e.id for e in envelopes[sent:]),
                    limit=self.settings.max_message_size,
                    size=env.size,
                )
                failure.__cause__ = exc
                break
            sent += 1
        if sent:
            await self._confirm(producer, reports, sent)
        bad = reports.unconfirmed(sent)
        if bad:
            ids = tuple(envelopes[i].id for i in bad) + (failure.failed_ids if failure else ())
            first = reports.first_error()
            if first is None:
                raise PublishError(
                    f"publish to topic {topic!r} not confirmed within "
                    f"{self.settings.publish_timeout:g} s",
                    retryable=True,
                    failed_ids=ids,
                )
            raise publish_error(first, topic, failed_ids=ids, limit=self.settings.max_message_size)
        if failure is not None:
            raise failure

    async def _confirm(self, producer: Producer, reports: _Reports, sent: int) -> None:
        """Wait until the ``sent`` delivery reports of ``reports`` are in, or the
        publish timeout. One flush sends the batch at once (no linger) and serves the
        reports; a report served by another publisher's concurrent flush may land just
        after ours returns, hence the batch future."""
        deadline = time.monotonic() + self.settings.publish_timeout
        await asyncio.to_thread(producer.flush, self.settings.publish_timeout)
        if reports.expect(sent):
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await asyncio.shield(reports.future)

    def consumer(self, topic: str, group: str, *, max_in_flight: int) -> Consumer:
        return KafkaConsumer(self.settings, topic, group, max_in_flight)

    def dead_letter_topic(self, topic: str, group: str) -> str:
        """``{topic}.{group}.dlq``; names with characters Kafka refuses are sanitised
        and suffixed with a short hash so two groups never share a DLQ topic."""
        name = f"{topic}.{group}.dlq"
        if _TOPIC_NAME.match(name):
            return name
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{topic}.{group}")[:200]
        return f"{safe}.{digest}.dlq"

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            raise PublishError("the Kafka adapter is not open", retryable=False)
        return self._admin


class _Reports:
    """The delivery reports of one published batch.

    librdkafka calls :meth:`report` from whichever thread serves the producer (the
    flush of this batch or of a concurrent one); ``list.append`` is atomic, so no lock
    is taken per message. The event loop is woken once per batch, by the last report.
    """

    __slots__ = ("_errors", "_expected", "_loop", "_reported", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self._reported: list[int] = []
        self._errors: dict[int, KafkaError] = {}
        self._expected: int | None = None

    def report(self, index: int, err: KafkaError | None, _record: Any) -> None:
        """Delivery callback of message ``index`` (runs in a librdkafka-serving thread)."""
        if err is not None:
            self._errors[index] = err
        self._reported.append(index)
        if len(self._reported) == self._expected:
            with contextlib.suppress(RuntimeError):  # a closed loop: the publisher is gone
                self._loop.call_soon_threadsafe(self._complete)

    def expect(self, count: int) -> bool:
        """Set how many reports the batch waits for; True if all of them are in."""
        self._expected = count
        return len(self._reported) >= count

    def unconfirmed(self, count: int) -> list[int]:
        """Indexes among the first ``count`` without a successful report."""
        if not self._errors and len(self._reported) >= count:
            return []
        reported = set(self._reported)
        return [i for i in range(count) if i not in reported or i in self._errors]

    def first_error(self) -> KafkaError | None:
        return self._errors[min(self._errors)] if self._errors else None

    def _complete(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

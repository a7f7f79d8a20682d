"""``kafka://host:port[,host:port...]``: the Kafka adapter on confluent-kafka.

A polybus topic is a Kafka topic (its name fitted to Kafka's rules by
:func:`~._records.kafka_topic`), a group is a consumer group, the key is the record
key. One producer and one admin client per adapter; one native consumer, with its own
fetch thread, per subscription. See README.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka.admin import AdminClient

from polybus.errors import BrokerUnavailable, PublishError
from polybus.spi import Adapter, Capabilities, Consumer, Envelope, GroupSpec, Lag, redact

from . import _admin, _lag
from ._consumer import KafkaConsumer
from ._publisher import Publisher
from ._records import kafka_topic
from ._settings import KafkaSettings, parse

log = logging.getLogger("polybus.kafka")


def capabilities(settings: KafkaSettings) -> Capabilities:
    """What Kafka gives, as this adapter uses it (README.md, "Capabilities")."""
    return Capabilities(
        competing_consumers=True,
        key_order=True,
        key_order_competing=True,
        fan_out=True,
        persistent=True,
        replay=True,
        native_delivery_count=False,
        native_dead_letter=False,
        delayed_redelivery=True,
        lag_messages=True,
        lag_seconds=True,
        broker_dedup=False,
        max_message_size=settings.max_message_size,
        stable_foreign_ids=True,
    )


class KafkaAdapter(Adapter):
    """The Kafka backend of one Bus."""

    name = "kafka"

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.capabilities = capabilities(settings)
        self.publish_timeout = settings.publish_timeout
        self._publisher: Publisher | None = None
        self._admin: AdminClient | None = None
        self._reader: _lag.Reader | None = None

    def __repr__(self) -> str:
        return f"<KafkaAdapter {redact('kafka://' + self.settings.bootstrap_servers)}>"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> KafkaAdapter:
        return cls(parse(url, options))

    async def open(self) -> None:
        """Connect: :class:`~polybus.errors.BrokerUnavailable` unless a broker answers
        within ``connect_timeout``."""
        if self._publisher is not None:
            return
        native_log = logging.getLogger("polybus.kafka.librdkafka")
        conf: dict[str, Any] = {"logger": native_log, **self.settings.common("admin")}
        admin = AdminClient(conf)
        await asyncio.to_thread(_admin.probe, admin, self.settings.connect_timeout)
        self._admin = admin
        self._reader = _lag.Reader(self.settings)
        self._publisher = Publisher(self.settings)

    async def close(self) -> None:
        publisher, self._publisher = self._publisher, None
        reader, self._reader = self._reader, None
        self._admin = None
        if reader is not None:
            await asyncio.to_thread(reader.close)
        if publisher is not None:
            await publisher.close()

    async def declare(self, topic: str, group: GroupSpec | None) -> None:
        """Create the topic (``partitions``, ``replication_factor``), or the group: its
        start offsets are committed at the partitions' ends, so it receives everything
        published from now on. Kafka stores no ordering for a group: both orderings are
        served, and consumers of one group must agree on it (README.md, "Ordering")."""
        publisher, admin = self._opened()
        name = kafka_topic(topic)
        partitions = publisher.partitions.get(name)
        if group is None or partitions is None:
            s = self.settings
            partitions = await asyncio.to_thread(
                _admin.ensure_topic,
                admin,
                name,
                partitions=s.topic_partitions,
                replication_factor=s.replication_factor,
                strict_partitions=s.partitions is not None,
                timeout=s.connect_timeout,
            )
            publisher.partitions[name] = partitions
        if group is not None:
            await asyncio.to_thread(
                _admin.ensure_group,
                admin,
                name,
                group.group,
                partitions,
                self.settings.connect_timeout,
            )

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        publisher, _ = self._opened()
        await publisher.publish(topic, kafka_topic(topic), envelopes)

    async def lag(self, group: GroupSpec) -> Lag:
        """``messages``: the sum over the topic's partitions of the end offset minus the
        group's committed offset; ``oldest_age``: since the timestamp of the oldest record
        at a committed offset with records after it (README.md, "Lag"). Read with admin
        calls and a reader of its own that never joins the group."""
        admin, reader = self._admin, self._reader
        if admin is None or reader is None:
            raise BrokerUnavailable("the Kafka adapter is not open")
        name = kafka_topic(group.topic)
        timeout = self.settings.connect_timeout
        parts = await asyncio.to_thread(_lag.backlog, admin, name, group.group, timeout)
        starts = {b.partition: b.start for b in parts if b.messages > 0}
        stamps = await asyncio.to_thread(reader.first_timestamps, name, starts, timeout)
        oldest = min(stamps.values(), default=None)
        age = None if oldest is None else max(0.0, time.time() - oldest)
        return Lag(sum(b.messages for b in parts), age)

    async def delete_group(self, group: GroupSpec) -> None:
        """Delete the consumer group (its committed offsets), once its members left;
        a group that is not there is fine."""
        _, admin = self._opened()
        await asyncio.to_thread(
            _admin.delete_group, admin, group.group, self.settings.connect_timeout
        )

    def consumer(self, group: GroupSpec, *, max_in_flight: int) -> Consumer:
        return KafkaConsumer(self.settings, group, max_in_flight)

    def _opened(self) -> tuple[Publisher, AdminClient]:
        if self._publisher is None or self._admin is None:
            raise PublishError("the Kafka adapter is not open", retryable=False)
        return self._publisher, self._admin

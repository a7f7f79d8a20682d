"""``amqp://`` / ``amqps://``: RabbitMQ through pika's asyncio connection adapter.

See the package README for the topology, the per-group ordering (a shared queue, or a
single active consumer for ``ordering="key"``), delayed redelivery and foreign messages.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from polybus.errors import ConfigError, PublishError
from polybus.spi import Adapter, Backoff, Capabilities, Consumer, Envelope, GroupSpec, Lag

from . import _settings, _topology
from ._consumer import MAX_DELAY, Queues, RabbitMQConsumer
from ._link import Link
from ._publisher import Publisher
from ._settings import RabbitMQSettings

log = logging.getLogger("polybus.rabbitmq")


def capabilities_for(settings: RabbitMQSettings) -> Capabilities:
    """The guarantees of a configuration (see the README's capability table)."""
    return Capabilities(
        competing_consumers=True,  # ordering none: one shared queue, prefetch each
        key_order=True,  # ordering key: single active consumer, keys gated by the core
        key_order_competing=False,  # ...so the other consumers only stand by
        fan_out=True,
        persistent=True,
        replay=False,
        native_delivery_count=settings.queue_type == "quorum",
        native_dead_letter=False,
        delayed_redelivery=True,
        max_delay=MAX_DELAY,
        broker_dedup=False,
        max_message_size=settings.max_message_size,
        # the ready messages of the group's queues (a passive queue.declare); the age
        # of the oldest needs the management plugin's API, which polybus does not use
        lag_messages=True,
        lag_seconds=False,
        # AMQP 0-9-1 gives a message no identity: without a message_id, a fresh id
        # per delivery
        stable_foreign_ids=False,
    )


class RabbitMQAdapter(Adapter):
    """RabbitMQ: topics are fanout exchanges, groups durable (quorum) queues.

    Publishing is confirmed and mandatory; batches pipeline their confirms. Safe for
    concurrent use by the tasks of the event loop that opened it.
    """

    name = "rabbitmq"

    def __init__(self, settings: RabbitMQSettings, params: list[Any], where: str) -> None:
        self.settings = settings
        self.where = where
        self.capabilities = capabilities_for(settings)
        self.publish_timeout = settings.publish_timeout
        self.names = _topology.Names(settings.exchange_prefix, settings.queue_prefix)
        backoff = Backoff(
            initial=min(0.1, settings.reconnect_max_delay),
            max_delay=settings.reconnect_max_delay,
            jitter="full",
        )
        self.link = Link(
            params, connect_timeout=settings.connect_timeout, backoff=backoff, where=where
        )
        self.publisher = Publisher(self.link, settings.publish_timeout)
        self._warned_unroutable: set[str] = set()

    def __repr__(self) -> str:
        return f"<RabbitMQAdapter {self.where}>"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> RabbitMQAdapter:
        settings, params, where = _settings.parse(url, options)
        return cls(settings, params, where)

    async def open(self) -> None:
        await self.link.open()

    async def close(self) -> None:
        await self.publisher.close()
        await self.link.close()

    async def declare(self, topic: str, group: GroupSpec | None) -> None:
        """The topic's exchange, or the group's queue bound to it (``x-single-active-
        consumer`` for a key-ordered group; ConfigError for the other ordering)."""
        exchange = self.names.exchange(topic)
        if group is None:
            await _topology.declare_exchange(self.link, exchange)
            return
        queue = self.names.queue(topic, group.group)
        await _topology.declare_group(self.link, exchange, queue, self.settings.queue_type, group)

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        returned = await self.publisher.publish(self.names.exchange(topic), envelopes)
        if not returned:
            return
        if self.settings.on_unroutable == "error":
            raise PublishError(
                f"topic {topic!r} has no group: {len(returned)} messages reached nobody",
                retryable=False,
                failed_ids=tuple(returned),
            )
        if topic not in self._warned_unroutable:
            self._warned_unroutable.add(topic)
            log.warning(
                "topic=%s has no group yet: %d published messages reached nobody "
                "(logged once per topic)",
                topic,
                len(returned),
            )

    async def lag(self, group: GroupSpec) -> Lag:
        """The ready messages of the group's queue plus those waiting in its delay
        queue (delayed redeliveries), from passive declarations: unacked deliveries are
        not counted (RabbitMQ's ``message_count`` is ready messages only). No age."""
        queue = self.names.queue(group.topic, group.group)
        ready = await _topology.ready_count(self.link, queue)
        if ready is None:
            raise ConfigError(
                "group",
                f"rabbitmq: no group {group.group!r} on topic {group.topic!r} "
                f"(queue {queue!r} does not exist)",
            )
        delayed = await _topology.ready_count(
            self.link, self.names.delay_queue(group.topic, group.group)
        )
        return Lag(ready + (delayed or 0), None)

    async def delete_group(self, group: GroupSpec) -> None:
        """Delete the group's queue and its delay queue (a temporary group's)."""
        await _topology.delete_queue(self.link, self.names.queue(group.topic, group.group))
        await _topology.delete_queue(self.link, self.names.delay_queue(group.topic, group.group))

    def consumer(self, group: GroupSpec, *, max_in_flight: int) -> Consumer:
        queues = Queues(
            work=self.names.queue(group.topic, group.group),
            delay=self.names.delay_queue(group.topic, group.group),
        )
        return RabbitMQConsumer(
            self.link, self.publisher, queues, group, max_in_flight=max_in_flight
        )

"""``amqp://`` / ``amqps://``: RabbitMQ through pika's asyncio connection adapter.

See the package README for the topology, the ordering design (single active consumer
plus per-key hand-out in the consumer), delayed redelivery and dead letters.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from polybus import config
from polybus.capabilities import Capabilities, Ordering
from polybus.errors import PublishError
from polybus.spi import Adapter, Consumer, Envelope, GroupSettings

from . import _settings, _topology
from ._link import Link
from ._publisher import Publisher
from ._settings import RabbitMQSettings

log = logging.getLogger("polybus.rabbitmq")


def capabilities_for(settings: RabbitMQSettings) -> Capabilities:
    """The guarantees of a configuration (see the README's capability table)."""
    quorum = settings.queue_type == "quorum"
    sac = settings.single_active_consumer
    return Capabilities(
        # one active consumer receives the queue in order; the others only stand by,
        # so several consumers of a group fail over rather than share the work
        ordering=Ordering.PER_KEY if sac else Ordering.PER_QUEUE_SINGLE_CONSUMER,
        fan_out=True,
        competing_consumers=not sac,
        persistent=True,
        replay=False,
        native_delivery_count=quorum,
        native_dead_letter=quorum,
        delayed_redelivery=True,
        broker_dedup=False,
        max_message_size=settings.max_message_size,
    )


def _without_userinfo(url: str) -> str:
    # the user name is left out too: it is often the password as well (guest:guest)
    scheme, _, rest = url.partition("://")
    head, sep, tail = rest.partition("/")
    return f"{scheme}://{head.rsplit('@', 1)[-1]}{sep}{tail}"


class RabbitMQAdapter(Adapter):
    """RabbitMQ: topics are fanout exchanges, groups durable (quorum) queues.

    Publishing is confirmed and mandatory; batches pipeline their confirms. Safe for
    concurrent use by the tasks of the event loop that opened it.
    """

    name = "rabbitmq"

    def __init__(self, url: str, settings: RabbitMQSettings, params: list[Any]) -> None:
        self.settings = settings
        self._url = _without_userinfo(config.redact(url))
        self.capabilities = capabilities_for(settings)
        self.names = _topology.Names(settings)
        self.link = Link(
            params,
            connect_timeout=settings.connect_timeout,
            reconnect_max_delay=settings.reconnect_max_delay,
            where=self._url,
        )
        self.publisher = Publisher(self.link, settings.publish_timeout)
        self._warned_unroutable: set[str] = set()
        self._delay_queues: set[str] = set()

    def __repr__(self) -> str:
        return f"<RabbitMQAdapter {self._url}>"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> RabbitMQAdapter:
        settings, params = _settings.parse(url, options)
        return cls(url, settings, params)

    def redacted_url(self) -> str:
        return self._url

    async def open(self) -> None:
        await self.link.open()

    async def close(self) -> None:
        await self.publisher.close()
        await self.link.close()

    async def ensure_topic(self, topic: str) -> None:
        await _topology.declare_exchange(self.link, self.names.exchange(topic))

    async def ensure_group(self, topic: str, group: str, settings: GroupSettings) -> None:
        limit = settings.max_deliveries
        dlq_exchange = self.names.exchange(self.dead_letter_topic(topic, group))
        arguments = _topology.group_arguments(self.settings, dlq_exchange, limit)
        if "x-dead-letter-exchange" in arguments:
            # dead letters must have somewhere to go before the first one is made
            await _topology.declare_exchange(self.link, dlq_exchange)
        effective = limit if limit is not None else self.settings.delivery_limit
        if effective is not None:
            self.names.limits[(topic, group)] = effective
        await _topology.declare_group(
            self.link,
            self.names.exchange(topic),
            self.names.queue(topic, group),
            arguments,
            accept_existing=effective is None,
        )

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        exchange = self.names.exchange(topic)
        returned = await self.publisher.publish(exchange, envelopes)
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

    async def ensure_delay_queue(self, delay_queue: str, work_queue: str) -> None:
        """Declare a group's delay queue once per adapter (idempotent on the broker)."""
        if delay_queue not in self._delay_queues:
            await _topology.declare_delay_queue(self.link, delay_queue, work_queue)
            self._delay_queues.add(delay_queue)

    def consumer(self, topic: str, group: str, *, max_in_flight: int) -> Consumer:
        from ._consumer import RabbitMQConsumer

        return RabbitMQConsumer(self, topic, group, max_in_flight=max_in_flight)

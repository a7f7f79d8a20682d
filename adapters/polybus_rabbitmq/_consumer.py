"""One consumer of one group queue, on a channel of its own: prefetch, ack, nack.

The broker pushes up to ``max_in_flight`` unacked deliveries (``basic.qos``) into
``_ready``; :meth:`RabbitMQConsumer.receive` hands them to the core. Per-key order,
dead-lettering and supervision are the core's: in a key-ordered group the queue has
a single active consumer and the core gates keys inside it.

One-shot: when the channel (or the connection) is lost, :meth:`~RabbitMQConsumer.receive`
raises :class:`~polybus.errors.BrokerUnavailable`, deliveries not handed out yet are
dropped (the broker delivers them again) and settling a delivery of the lost channel
raises BrokerUnavailable too. The core then opens a fresh consumer.

nack: ``basic.nack(requeue)`` without a delay (a quorum queue puts the message at its
back); with a delay, a copy carrying the attempts made goes to the group's delay
queue (confirmed) and the original is acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pika import exceptions as pe

from polybus.errors import BrokerUnavailable, PolybusError, PublishError, SettlementError
from polybus.spi import Consumer, GroupSpec, Message, Ready

from . import _errors, _topology, _wire
from ._link import Chan, Link
from ._publisher import Publisher

log = logging.getLogger("polybus.rabbitmq")

MAX_PREFETCH = 65535
"""``basic.qos`` counts in an unsigned short."""
MAX_DELAY = 315_360_000.0
"""The longest per-message TTL RabbitMQ accepts: 10 years, in seconds (measured on
RabbitMQ 3.10: ``expiration`` above 315360000000 ms closes the channel)."""


@dataclass(slots=True, eq=False)
class Delivery:
    """The receipt of one delivery: its channel and delivery tag."""

    chan: Chan
    tag: int


@dataclass(frozen=True, slots=True)
class Queues:
    """Where a consumer reads, and where its delayed redeliveries wait."""

    work: str
    delay: str


class RabbitMQConsumer(Consumer):
    """Deliveries of the group ``spec`` from ``queues.work``; prefetch =
    ``max_in_flight``. Used from the event loop only."""

    def __init__(
        self,
        link: Link,
        publisher: Publisher,
        queues: Queues,
        spec: GroupSpec,
        *,
        max_in_flight: int,
    ) -> None:
        self.link = link
        self.publisher = publisher
        self.queues = queues
        self.spec = spec
        self.max_in_flight = max_in_flight
        self._chan: Chan | None = None
        self._ready: deque[Message] = deque()
        self._unacked: dict[int, Delivery] = {}
        """Every delivery of the channel not settled yet (handed out or not), by tag
        in delivery order."""
        self._wake = asyncio.Event()
        self._notify: Ready | None = None
        """The core's ``ready`` (see :meth:`watch`)."""
        self._failure: PolybusError | None = None
        self._delay_declared = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<RabbitMQConsumer queue={self.queues.work!r}>"

    async def open(self) -> None:
        """Consume from the group queue on a new channel; BrokerUnavailable if the
        connection is down, ConfigError if the broker refuses access."""
        chan = await self.link.channel()
        # deliveries may arrive before the consume-ok callback resumes this coroutine
        self._chan = chan
        chan.on_close(self._on_chan_close)
        try:
            await chan.call(
                lambda cb: chan.native.basic_qos(
                    prefetch_count=min(self.max_in_flight, MAX_PREFETCH), callback=cb
                )
            )
            chan.native.add_on_cancel_callback(self._on_cancelled)
            await chan.call(
                lambda cb: chan.native.basic_consume(
                    self.queues.work, self._on_message, callback=cb
                )
            )
        except pe.AMQPError as exc:
            await chan.close()
            raise _errors.declare_error(
                exc, "group", f"consumer of queue {self.queues.work!r}"
            ) from exc

    def _on_message(self, _ch: Any, method: Any, props: Any, body: bytes) -> None:
        chan = self._chan
        if chan is None or self._closed:
            return  # closing: the channel's close gives it back
        receipt = Delivery(chan, method.delivery_tag)
        self._unacked[method.delivery_tag] = receipt
        spec = self.spec
        self._ready.append(_wire.message(spec.topic, spec.group, method, props, body, receipt))
        self._wake.set()
        if self._notify is not None:
            self._notify()

    def _on_cancelled(self, _frame: Any) -> None:
        self._fail(
            BrokerUnavailable(
                f"the broker cancelled the consumer of queue {self.queues.work!r} (queue deleted?)"
            )
        )

    def _on_chan_close(self, reason: BaseException) -> None:
        if not self._closed:
            log.warning(
                "consumer of queue %s lost its channel (%s)",
                self.queues.work,
                _errors.describe(reason),
            )
        # unacked deliveries of a dead channel are redelivered by the broker
        self._unacked.clear()
        self._fail(_errors.connection_error(reason, self.link.where))

    def _fail(self, failure: PolybusError) -> None:
        if self._failure is None:
            self._failure = failure
        self._ready.clear()
        self._wake.set()
        if self._notify is not None:
            self._notify(failed=True)

    async def receive(self, max_messages: int) -> Sequence[Message]:
        while True:
            if self._closed:
                raise SettlementError(f"consumer of queue {self.queues.work!r} is closed")
            if self._failure is not None:
                raise self._failure
            ready = self._ready
            if ready:
                # synchronous from the first pop to the return: cancellation-safe
                count = min(max_messages, len(ready))
                return [ready.popleft() for _ in range(count)]
            self._wake.clear()
            await self._wake.wait()

    def watch(self, ready: Ready) -> bool:
        """The broker pushes deliveries (``basic.consume``): ``ready`` is called from
        the delivery callback and when the channel is lost."""
        self._notify = ready
        return True

    def poll(self, max_messages: int) -> Sequence[Message]:
        """Deliveries already received (the core's fast path)."""
        if self._closed or self._failure is not None:
            return ()  # receive says why
        ready = self._ready
        count = min(max_messages, len(ready))
        return [ready.popleft() for _ in range(count)]

    def _settling(self, messages: Sequence[Message], verb: str) -> Chan:
        """The live channel of ``messages``; BrokerUnavailable if it is lost (the broker
        delivers them again), SettlementError for a delivery not in flight here."""
        chan = self._chan
        for msg in messages:
            receipt = msg.receipt
            if not isinstance(receipt, Delivery):
                raise SettlementError(f"message {msg.id} was not delivered by RabbitMQ")
            if receipt.chan is not chan or chan is None or not chan.is_open:
                raise BrokerUnavailable(
                    f"cannot {verb} message {msg.id}: the connection was lost after it "
                    "was delivered; the broker will deliver it again"
                )
            if self._unacked.get(receipt.tag) is not receipt:
                raise SettlementError(f"message {msg.id} is not in flight on this consumer")
        assert chan is not None
        return chan

    async def ack(self, messages: Sequence[Message]) -> None:
        """Ack the batch: one ``basic.ack(multiple)`` for the part of it that is the
        oldest unsettled deliveries of the channel, one per tag for the rest."""
        chan = self._settling(messages, "ack")
        tags = sorted(msg.receipt.tag for msg in messages)
        unacked = self._unacked
        prefix = 0
        for tag in unacked:  # in delivery order, which is tag order
            if prefix == len(tags) or tag != tags[prefix]:
                break
            prefix += 1
        try:
            if prefix > 1:
                chan.native.basic_ack(tags[prefix - 1], multiple=True)
            else:
                prefix = 0
            for tag in tags[prefix:]:
                chan.native.basic_ack(tag)
        except pe.AMQPError as exc:
            raise _errors.connection_error(exc, self.link.where) from exc
        finally:
            for tag in tags:
                unacked.pop(tag, None)

    async def nack(self, message: Message, delay: float | None) -> None:
        chan = self._settling([message], "nack")
        tag = message.receipt.tag
        if delay:
            await self._delay_copy(chan, message, delay)
            return
        self._unacked.pop(tag, None)
        try:
            chan.native.basic_nack(tag, requeue=True)
        except pe.AMQPError as exc:
            raise _errors.connection_error(exc, self.link.where) from exc

    async def _delay_copy(self, chan: Chan, message: Message, delay: float) -> None:
        """A confirmed copy in the delay queue, then ack; the original goes back at
        once (and the error is raised) if the copy cannot be made."""
        if delay > MAX_DELAY:
            log.warning("nack delay %.0fs capped at RabbitMQ's maximum TTL", delay)
            delay = MAX_DELAY
        tag = message.receipt.tag
        try:
            if not self._delay_declared:
                await _topology.declare_delay_queue(self.link, self.queues.delay, self.queues.work)
                self._delay_declared = True
            returned = await self.publisher.publish(
                "",
                [_wire.envelope_of(message)],
                routing_key=self.queues.delay,
                attempts_done=message.delivery_attempt,
                expiration_ms=math.ceil(delay * 1000),
            )
            if returned:
                self._delay_declared = False
                raise PublishError(
                    f"delay queue {self.queues.delay!r} is missing: the delayed copy of "
                    f"{message.id} was returned",
                    retryable=True,
                    failed_ids=(message.id,),
                )
        except BaseException:
            if self._unacked.pop(tag, None) is not None:
                with contextlib.suppress(pe.AMQPError):
                    chan.native.basic_nack(tag, requeue=True)
            raise
        if self._unacked.pop(tag, None) is None:
            return  # the channel was lost meanwhile: the broker redelivers the original
        try:
            chan.native.basic_ack(tag)
        except pe.AMQPError as exc:
            raise _errors.connection_error(exc, self.link.where) from exc

    async def close(self) -> None:
        """Close the channel: every unacked delivery returns to the queue, in order."""
        if self._closed:
            return
        self._closed = True
        self._ready.clear()
        self._wake.set()
        chan, self._chan = self._chan, None
        if chan is not None:
            await chan.close()
        self._unacked.clear()

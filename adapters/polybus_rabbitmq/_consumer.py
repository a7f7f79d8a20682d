"""One consumer of one group queue: prefetch, per-key hand-out, ack and nack.

Ordering. Group queues have a single active consumer (by default), so one consumer
at a time receives the queue in order. Inside it, a delivery whose key has an earlier
message still unsettled is held back (it stays unacked, inside the prefetch window)
until that message is settled: a key's next message is never handed out early.

Redelivery. RabbitMQ 3.10 quorum queues put a message requeued by ``basic.nack`` at
the *back* of the queue, which would let later messages of its key overtake it. So a
nacked message with a key is redelivered by this consumer itself, in place, after its
delay (it stays unacked meanwhile; ``delivery_attempt`` grows locally). A nacked message
without a key is requeued (``nack()``) or copied to the group's delay queue and acked
(``nack(delay)``): the copy carries the attempts made in ``polybus-attempt``.

Delivery limit. When a nack would exceed the group's ``max_deliveries``, the consumer
publishes the dead-letter copy itself (confirmed) and acks; the broker's own
``x-delivery-limit`` catches messages that are never nacked (a consumer crashing).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pika import exceptions as pe

from polybus._deadletter import dead_letter_envelope
from polybus._message import Message
from polybus.errors import BrokerUnavailable, PolybusError, SettlementError
from polybus.spi import Consumer

from . import _errors, _wire
from ._link import Chan

if TYPE_CHECKING:
    from ._adapter import RabbitMQAdapter

log = logging.getLogger("polybus.rabbitmq")
_seq = itertools.count()


@dataclass(slots=True, eq=False)
class _Delivery:
    seq: int
    chan: Chan
    tag: int
    key: str | None
    method: Any
    props: Any
    body: bytes
    attempt: int = 0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class RabbitMQConsumer(Consumer):
    """Deliveries of ``group`` on ``topic``; prefetch = ``max_in_flight``."""

    def __init__(
        self, adapter: RabbitMQAdapter, topic: str, group: str, *, max_in_flight: int
    ) -> None:
        self.adapter = adapter
        self.topic = topic
        self.group = group
        self.max_in_flight = max_in_flight
        self.queue = adapter.names.queue(topic, group)
        self._chan: Chan | None = None
        self._waiting: deque[_Delivery] = deque()
        self._out: dict[int, _Delivery] = {}
        self._locked: set[str] = set()
        self._wake = asyncio.Event()
        self._closed = False
        self._failure: PolybusError | None = None
        self._restart: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._start()

    async def _start(self) -> None:
        chan = await self.adapter.link.channel()
        # deliveries may arrive before the consume-ok callback resumes this coroutine
        self._chan = chan
        try:
            await chan.call(
                lambda cb: chan.native.basic_qos(prefetch_count=self.max_in_flight, callback=cb)
            )
            chan.native.add_on_cancel_callback(self._on_cancelled)
            await chan.call(
                lambda cb: chan.native.basic_consume(
                    self.queue, self._deliver_to(chan), callback=cb
                )
            )
        except Exception as exc:
            self._chan = None
            lost = not chan.native.is_open or not self.adapter.link.is_up
            await chan.close()
            if lost and not isinstance(exc, pe.ChannelClosedByBroker):
                # the connection went away between opening the channel and consuming
                # (pika then refuses calls on the dead channel): retry, not a bad group
                raise _errors.connection_error(exc, self.adapter.link.where) from exc
            raise _errors.declare_error(exc, "group", f"consumer of queue {self.queue!r}") from exc
        chan.on_close(lambda reason: self._on_chan_close(chan, reason))

    def _deliver_to(self, chan: Chan) -> Any:
        def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            if chan is not self._chan or self._closed:
                return  # a stale channel: the broker redelivers its messages
            headers = props.headers or {}
            key = headers.get("polybus-key")
            if isinstance(key, bytes):
                key = key.decode("utf-8", "replace")
            self._waiting.append(
                _Delivery(next(_seq), chan, method.delivery_tag, key, method, props, body)
            )
            self._wake.set()

        return on_message

    def _on_cancelled(self, _frame: Any) -> None:
        self._failure = BrokerUnavailable(
            f"the broker cancelled the consumer of queue {self.queue!r} (queue deleted?)"
        )
        self._wake.set()

    def _on_chan_close(self, chan: Chan, reason: BaseException) -> None:
        if self._closed or chan is not self._chan:
            return
        self._chan = None
        # unacked deliveries of a dead channel are redelivered by the broker
        self._waiting = deque(d for d in self._waiting if d.chan is not chan)
        for seq, d in list(self._out.items()):
            if d.chan is chan and d.timer is not None:
                d.timer.cancel()
                self._release(d)
                del self._out[seq]
        log.warning(
            "consumer topic=%s group=%s lost its channel (%s); resubscribing",
            self.topic,
            self.group,
            _errors.describe(reason),
        )
        self._restart = asyncio.get_running_loop().create_task(self._resubscribe())

    async def _resubscribe(self) -> None:
        delay = 0.1
        while not self._closed:
            try:
                await self._start()
            except BrokerUnavailable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.adapter.settings.reconnect_max_delay)
            except PolybusError as exc:
                self._failure = exc
                self._wake.set()
                return
            else:
                log.info("consumer topic=%s group=%s resubscribed", self.topic, self.group)
                return

    async def fetch(self, max_messages: int) -> list[Message]:
        while True:
            if self._closed:
                raise SettlementError(f"consumer of queue {self.queue!r} is closed")
            if self._failure is not None:
                raise self._failure
            batch = self._take(max_messages)
            limit = self.adapter.names.limits.get((self.topic, self.group))
            if limit is not None:
                batch = await self._drop_poisoned(batch, limit)
            if batch:
                return batch
            self._wake.clear()
            await self._wake.wait()

    async def _drop_poisoned(self, batch: list[Message], limit: int) -> list[Message]:
        """Dead-letter what comes back beyond the limit without a nack (a consumer that
        crashed), where the queue has no native limit (declared earlier without one)."""
        out: list[Message] = []
        for msg in batch:
            if msg.delivery_attempt <= limit:
                out.append(msg)
                continue
            d = msg.receipt
            self._out.pop(d.seq, None)
            msg.delivery_attempt = limit
            await self._dead_letter(d, msg, limit)
        return out

    def _take(self, limit: int) -> list[Message]:
        # synchronous from the first hand-out to the return: cancellation-safe
        out: list[Message] = []
        skipped: list[_Delivery] = []
        waiting, locked = self._waiting, self._locked
        while waiting and len(out) < limit:
            d = waiting.popleft()
            if d.key is not None:
                if d.key in locked:
                    skipped.append(d)  # an earlier message of its key is unsettled
                    continue
                locked.add(d.key)
            out.append(self._message(d))
            self._out[d.seq] = d
        waiting.extendleft(reversed(skipped))
        return out

    def _message(self, d: _Delivery) -> Message:
        msg = _wire.message(self.topic, self.group, d.method, d.props, d.body, self.adapter.names)
        if d.attempt == 0:
            d.attempt = msg.delivery_attempt
        msg.delivery_attempt = d.attempt
        msg.receipt = d
        return msg

    def _release(self, d: _Delivery) -> None:
        if d.key is not None:
            self._locked.discard(d.key)
        self._wake.set()

    def _settling(self, message: Message, verb: str) -> _Delivery:
        d = message.receipt
        if not isinstance(d, _Delivery) or self._out.pop(d.seq, None) is not d:
            raise SettlementError(f"message {message.id} is not in flight on this consumer")
        if d.chan is not self._chan or not d.chan.is_open:
            self._release(d)
            raise BrokerUnavailable(
                f"cannot {verb} message {message.id}: the connection was lost after it "
                "was delivered; the broker will deliver it again"
            )
        return d

    async def ack(self, message: Message) -> None:
        d = self._settling(message, "ack")
        self._release(d)
        d.chan.native.basic_ack(d.tag)

    async def nack(self, message: Message, delay: float | None) -> None:
        d = self._settling(message, "nack")
        limit = self.adapter.names.limits.get((self.topic, self.group))
        if limit is not None and message.delivery_attempt >= limit:
            await self._dead_letter(d, message, limit)
        elif d.key is not None:
            # redeliver in place: requeueing would put it behind later messages of its key
            d.attempt += 1
            self._out[d.seq] = d
            if delay:
                d.timer = asyncio.get_running_loop().call_later(delay, self._again, d)
            else:
                self._again(d)
        elif delay:
            await self._delay_copy(d, message, delay)
        else:
            self._release(d)
            d.chan.native.basic_nack(d.tag, requeue=True)

    def _again(self, d: _Delivery) -> None:
        d.timer = None
        if self._out.pop(d.seq, None) is not d or self._closed:
            return
        if d.key is not None:
            self._locked.discard(d.key)
        bisect.insort(self._waiting, d, key=lambda x: x.seq)
        self._wake.set()

    async def _delay_copy(self, d: _Delivery, message: Message, delay: float) -> None:
        delay_queue = self.adapter.names.delay_queue(self.topic, self.group)
        try:
            await self.adapter.ensure_delay_queue(delay_queue, self.queue)
            await self.adapter.publisher.publish(
                "",
                [_wire.envelope_of(message)],
                routing_key=delay_queue,
                attempts_done=message.delivery_attempt,
                expiration_ms=math.ceil(delay * 1000),
            )
        except BaseException:
            self._release(d)
            with contextlib.suppress(Exception):
                d.chan.native.basic_nack(d.tag, requeue=True)
            raise
        self._release(d)
        d.chan.native.basic_ack(d.tag)

    async def _dead_letter(self, d: _Delivery, message: Message, limit: int) -> None:
        copy = dead_letter_envelope(message, f"delivery limit of {limit} reached")
        dlq = self.adapter.dead_letter_topic(self.topic, self.group)
        try:
            await self.adapter.publish(dlq, [copy])
        except BaseException:
            self._release(d)
            with contextlib.suppress(Exception):
                d.chan.native.basic_nack(d.tag, requeue=True)
            raise
        log.warning(
            "dead-lettered topic=%s group=%s id=%s reason=delivery limit of %d reached",
            self.topic,
            self.group,
            message.id,
            limit,
        )
        self._release(d)
        d.chan.native.basic_ack(d.tag)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._restart is not None:
            self._restart.cancel()
            with contextlib.suppress(BaseException):
                await self._restart
        for d in self._out.values():
            if d.timer is not None:
                d.timer.cancel()
        self._out.clear()
        self._waiting.clear()
        chan, self._chan = self._chan, None
        if chan is not None:
            # closing the channel returns every unacked delivery to the queue, in order
            await chan.close()

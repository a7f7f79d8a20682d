"""Subscription: one consumer of one group, with backpressure and settlement."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Literal

from ._deadletter import DLQ_GROUP, dead_letter_envelope
from ._message import Message
from .errors import ConfigError, PolybusError, SettlementError
from .spi import Consumer

if TYPE_CHECKING:
    from types import TracebackType

    from ._bus import Bus

log = logging.getLogger("polybus.subscription")

DeliveryMode = Literal["at_most_once", "at_least_once", "effectively_once"]
DELIVERY_MODES: tuple[DeliveryMode, ...] = ("at_most_once", "at_least_once", "effectively_once")


class Subscription:
    """An async context manager and async iterator of :class:`~polybus.Message`.

    Entering declares the topic and the group (and the group's dead-letter topic), so
    every message published from then on reaches the group. At most ``max_in_flight``
    messages are unsettled at once: iteration waits for a settlement before fetching
    more. Leaving closes the consumer; every unsettled message goes back to the broker.

    Delivery modes: ``at_least_once`` (the default; settle after processing),
    ``at_most_once`` (acked before it is handed out), ``effectively_once`` (at least
    once; a :class:`~polybus.Worker` requires idempotency middleware for it).
    Not thread-safe: use it from the event loop that entered it.
    """

    def __init__(
        self,
        bus: Bus,
        topic: str,
        group: str,
        *,
        max_in_flight: int,
        delivery: DeliveryMode,
        max_deliveries: int | None,
    ) -> None:
        if not isinstance(group, str) or not group:
            raise ConfigError("group", "must be a non-empty string")
        if not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ConfigError("max_in_flight", f"must be an integer >= 1, got {max_in_flight!r}")
        if delivery not in DELIVERY_MODES:
            raise ConfigError("delivery", f"{delivery!r} is not one of {list(DELIVERY_MODES)}")
        if max_deliveries is not None and max_deliveries < 1:
            raise ConfigError("max_deliveries", f"must be >= 1, got {max_deliveries!r}")
        self.bus = bus
        self.topic = topic
        self.group = group
        self.max_in_flight = max_in_flight
        self.delivery: DeliveryMode = delivery
        self.max_deliveries = max_deliveries
        self._consumer: Consumer | None = None
        self._buffer: deque[Message] = deque()
        self._unsettled = 0
        self._slot_freed = asyncio.Event()
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<Subscription topic={self.topic!r} group={self.group!r} "
            f"max_in_flight={self.max_in_flight} unsettled={self._unsettled}>"
        )

    @property
    def unsettled(self) -> int:
        """Messages fetched and not yet settled (handed out or buffered)."""
        return self._unsettled

    async def open(self) -> Subscription:
        adapter = self.bus.adapter
        await self.bus._declare_group(self.topic, self.group, self.max_deliveries)
        consumer = adapter.consumer(self.topic, self.group, max_in_flight=self.max_in_flight)
        await consumer.open()
        self._consumer = consumer
        log.info("subscribed topic=%s group=%s", self.topic, self.group)
        return self

    async def close(self) -> None:
        """Stop consuming; unsettled messages go back to the broker. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._slot_freed.set()
        if self._consumer is not None:
            await self._consumer.close()
        log.info("unsubscribed topic=%s group=%s", self.topic, self.group)

    async def __aenter__(self) -> Subscription:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        if self._closed:
            raise StopAsyncIteration
        return await self.get()

    async def get(self, timeout: float | None = None) -> Message:  # noqa: ASYNC109
        """The next message; :class:`TimeoutError` if none comes within ``timeout``."""
        # a buffered message is there already: no fetch, no timer (the hot path; the
        # buffer is emptied on close, so a non-empty one means open)
        if not self._buffer:
            if timeout is None:
                await self._fill()
            else:
                async with asyncio.timeout(timeout):
                    await self._fill()
        msg = self._buffer.popleft()
        if self.delivery == "at_most_once":
            await msg.ack()
        return msg

    async def get_many(
        self,
        max_messages: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[Message]:
        """Wait for at least one message; return it with every message ready now, at
        most ``max_messages`` (default: no limit beyond ``max_in_flight``).

        The batch form of :meth:`get`, for consumers that process in batches: settle
        the messages with :meth:`ack_many` (or one by one). :class:`TimeoutError` if
        no message comes within ``timeout``.
        """
        if max_messages is not None and (not isinstance(max_messages, int) or max_messages < 1):
            raise ConfigError("max_messages", f"must be an integer >= 1, got {max_messages!r}")
        first = await self.get(timeout)
        out = [first]
        buffer = self._buffer
        limit = max_messages or self.max_in_flight
        while buffer and len(out) < limit:
            out.append(buffer.popleft())
        if self.delivery == "at_most_once":
            await self.ack_many(out[1:])  # get acked the first
        return out

    async def ack_many(self, messages: Iterable[Message]) -> None:
        """Ack several messages of this subscription with one adapter call.

        Every message is checked first (delivered by this subscription, not settled
        yet); a bad one raises :class:`~polybus.errors.SettlementError` and settles
        nothing.
        """
        batch = list(messages)
        if not batch:
            return
        consumer = self._check_open_many(batch)
        for msg in batch:
            msg.settlement = "ack"
        self._unsettled -= len(batch)
        self._slot_freed.set()
        await consumer.ack_many(batch)

    async def _fill(self) -> None:
        """Wait until the buffer holds a message, fetching within the free slots."""
        consumer = self._consumer
        if consumer is None or self._closed:
            raise SettlementError("subscription is not open")
        while not self._buffer:
            free = self.max_in_flight - self._unsettled
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                if self._closed:
                    raise StopAsyncIteration
                continue
            try:
                batch = await consumer.fetch(free)
            except PolybusError:
                if self._closed:  # closed while this call waited: end the iteration
                    raise StopAsyncIteration from None
                raise
            if self._closed:  # the consumer gives back what it fetched on close
                raise StopAsyncIteration
            self._unsettled += len(batch)
            for msg in batch:
                msg._settler = self
            self._buffer.extend(batch)

    def _freed(self) -> None:
        self._unsettled -= 1
        self._slot_freed.set()

    def _check_open(self, msg: Message, verb: str) -> Consumer:
        if self._closed or self._consumer is None:
            raise SettlementError(
                f"cannot {verb} message {msg.id}: its subscription is closed "
                "(the message went back to the broker)"
            )
        return self._consumer

    def _check_open_many(self, batch: list[Message]) -> Consumer:
        for msg in batch:
            if msg._settler is not self:
                raise SettlementError(
                    f"cannot ack message {msg.id}: it was not delivered by this subscription"
                )
            if msg.settlement is not None:
                raise SettlementError(
                    f"cannot ack message {msg.id}: already settled ({msg.settlement})"
                )
        if len({id(m) for m in batch}) != len(batch):
            raise SettlementError("cannot ack the same message twice in one batch")
        return self._check_open(batch[0], "ack")

    def _settle_ack(self, msg: Message) -> Awaitable[None]:
        # not a coroutine: the adapter's ack is the only awaitable, one frame less
        consumer = self._check_open(msg, "ack")
        msg.settlement = "ack"
        self._freed()
        return consumer.ack(msg)

    async def _settle_nack(self, msg: Message, delay: float | None) -> None:
        consumer = self._check_open(msg, "nack")
        msg.settlement = "nack"
        self._freed()
        log.debug("nack topic=%s group=%s id=%s delay=%s", msg.topic, self.group, msg.id, delay)
        await consumer.nack(msg, delay)

    async def _settle_dead_letter(
        self,
        msg: Message,
        reason: str,
        error: BaseException | None,
        metadata: Mapping[str, str] | None,
    ) -> None:
        consumer = self._check_open(msg, "dead-letter")
        if self.group == DLQ_GROUP:
            raise SettlementError(
                f"message {msg.id} is already a dead letter: ack it, nack it or replay it "
                "(bus.replay_dead_letters)"
            )
        msg.settlement = "dead_letter"
        envelope = dead_letter_envelope(msg, reason, error, metadata)
        dlq = self.bus.adapter.dead_letter_topic(self.topic, self.group)
        try:
            await self.bus._publish_envelopes(dlq, [envelope])
        except BaseException:
            # the copy is not confirmed: the original must come back, never be acked
            msg.settlement = "nack"
            self._freed()
            log.error(
                "dead-letter publish failed, nacking topic=%s group=%s id=%s",
                msg.topic,
                self.group,
                msg.id,
            )
            await consumer.nack(msg, None)
            raise
        self._freed()
        log.warning(
            "dead-lettered topic=%s group=%s id=%s reason=%s", msg.topic, self.group, msg.id, reason
        )
        await consumer.dead_lettered(msg)

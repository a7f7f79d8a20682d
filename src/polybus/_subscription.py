"""Subscription: the consumer pipeline of one group, the same on every backend.

Written here once: the hand-out within ``max_in_flight``, the receive that a cancelled
``get`` leaves running (its messages wait in the buffer), per-key gating and in-place
redelivery for key-ordered groups (:mod:`._pipeline.keys`), dead-lettering at the
delivery limit and on request through one path, lease keeping
(:mod:`._pipeline.leases`), replay isolation, and supervision: a consumer that loses
its broker is retired and a fresh one opened with backoff (:mod:`._pipeline.supervision`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from . import headers as h
from ._deadletter import dead_letter_envelope
from ._events import emit
from ._message import Message
from ._pipeline.acks import AckBatcher
from ._pipeline.keys import KeyGate
from ._pipeline.leases import LeaseKeeper
from ._pipeline.supervision import Health, Supervisor
from .capabilities import Capabilities
from .errors import BrokerUnavailable, ConfigError, SettlementError
from .spi import Consumer, GroupSpec

if TYPE_CHECKING:
    from types import TracebackType

    from ._producer import Producer, State
    from ._topology import Topology
    from .telemetry import Telemetry

log = logging.getLogger("polybus.subscription")

DeliveryMode = Literal["at_most_once", "at_least_once", "effectively_once"]
DELIVERY_MODES: tuple[DeliveryMode, ...] = ("at_most_once", "at_least_once", "effectively_once")
RETRY_AFTER_FAILED_DEAD_LETTER = 1.0
"""Seconds a message waits before it comes back when its dead-letter copy could not be
published (the dead-letter topic's broker is failing: no tight loop)."""


def check_options(
    max_in_flight: object, delivery: object, max_deliveries: object, reconnect_timeout: object
) -> None:
    """ConfigError naming the first bad subscription option."""
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise ConfigError("max_in_flight", f"must be an integer >= 1, got {max_in_flight!r}")
    if delivery not in DELIVERY_MODES:
        raise ConfigError("delivery", f"{delivery!r} is not one of {list(DELIVERY_MODES)}")
    if max_deliveries is not None and (
        isinstance(max_deliveries, bool)
        or not isinstance(max_deliveries, int)
        or max_deliveries < 1
    ):
        raise ConfigError("max_deliveries", f"must be an integer >= 1, got {max_deliveries!r}")
    if reconnect_timeout is not None and (
        isinstance(reconnect_timeout, bool)
        or not isinstance(reconnect_timeout, int | float)
        or not reconnect_timeout >= 0
    ):
        raise ConfigError(
            "reconnect_timeout",
            f"must be a number of seconds >= 0 (math.inf: forever), got {reconnect_timeout!r}",
        )


class Subscription:
    """An async context manager and async iterator of :class:`~polybus.Message`.

    Entering declares the topic and the group (and its dead-letter topic), so every
    message published from then on reaches the group. At most ``max_in_flight``
    messages are unsettled at once. In a key-ordered group a key's next message is
    handed out only once the earlier one is settled, and a nacked keyed message comes
    back before any later one of its key. A message delivered more than
    ``max_deliveries`` times goes to the dead-letter topic unseen. Leaving closes the
    consumer; every unsettled message goes back to the broker.

    Outages: a lost broker is ridden out for up to ``reconnect_timeout`` seconds
    (``math.inf``: forever), then ``get`` raises :class:`~polybus.errors.BrokerUnavailable`;
    :attr:`health` tells the state. Not thread-safe: use it from the event loop that
    entered it.
    """

    def __init__(
        self,
        *,
        spec: GroupSpec,
        adapter_consumer: Any,
        producer: Producer,
        topology: Topology,
        state: State,
        max_in_flight: int,
        delivery: DeliveryMode,
        max_deliveries: int | None,
        reconnect_timeout: float,
        registry: set[Subscription],
        telemetry: Telemetry | None = None,
    ) -> None:
        check_options(max_in_flight, delivery, max_deliveries, reconnect_timeout)
        caps = producer.adapter.capabilities
        bound = caps.max_deliveries
        if max_deliveries is not None and bound is not None and max_deliveries > bound:
            raise ConfigError(
                "max_deliveries",
                f"the {producer.adapter.name} backend counts at most "
                f"{caps.max_deliveries} deliveries, got {max_deliveries}",
            )
        if max_deliveries is not None and spec.dead_letter_topic is None:
            raise ConfigError(
                "max_deliveries",
                f"group {spec.group!r} of {spec.topic!r} is a dead-letter group: it has no "
                "dead-letter topic of its own, so a delivery limit cannot apply",
            )
        if delivery == "at_most_once" and spec.key_ordered:
            raise ConfigError(
                "delivery",
                "at_most_once settles a message before it is processed, so its key's next "
                "message would be handed out while it is still being processed; "
                "ordering='key' needs at_least_once or effectively_once",
            )
        self.spec = spec
        self.topic = spec.topic
        self.group = spec.group
        self.max_in_flight = max_in_flight
        self.delivery: DeliveryMode = delivery
        self._ack_first = delivery == "at_most_once"
        self.max_deliveries = max_deliveries
        self._new_consumer = adapter_consumer
        self._producer = producer
        self._topology = topology
        self._state = state
        self._registry = registry
        self._where = f"topic={spec.topic} group={spec.group}"
        self._supervisor = Supervisor(self._where, reconnect_timeout)
        self._consumer: Consumer | None = None
        self._out: dict[Consumer, int] = {}
        """Unsettled messages per consumer; a retired consumer closes at zero."""
        self._retired: set[Consumer] = set()
        self._ready: deque[Message] = deque()
        self._gate: KeyGate | None = None
        self._leased: dict[int, Message] | None = None
        self._leases: LeaseKeeper | None = None
        self._unsettled = 0
        self._changed = asyncio.Event()
        self._receiving: asyncio.Task[None] | None = None
        self._watched: Consumer | None = None
        """The current consumer, when it tells us of its deliveries (``watch``): then no
        receive waits for them (see _on_ready)."""
        self._missed = False
        """A watched consumer failed while no slot was free: the next hand-out that
        finds nothing asks it with a receive (which raises why)."""
        self._waiting = 0
        """Hand-outs waiting for a message (in _next)."""
        self._dispatch: Callable[[Message], None] | None = None
        """While :meth:`_serve` runs: takes each message as soon as it is ready."""
        self._failure: BaseException | None = None
        self._background: set[asyncio.Future[Any]] = set()
        """Dead-lettering and replay skips in progress (cancelled on close)."""
        self._closings: set[asyncio.Future[Any]] = set()
        """Retired consumers being closed (awaited on close, never cancelled)."""
        self._acks = AckBatcher()
        """Acks go to each consumer in batches (see _pipeline.acks)."""
        self._timers: set[asyncio.TimerHandle] = set()
        """Delayed in-place redeliveries."""
        self._observer: Callable[[Message, str], None] | None = None
        """Told every settlement (``ack``, ``nack``, ``dead_letter``, ``skipped``); the
        test harness (:mod:`polybus.testing`) listens here."""
        self._time_lag: float | None = None
        self._telemetry = telemetry
        self._ever_opened = False
        self._opened = False
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<Subscription topic={self.topic!r} group={self.group!r} "
            f"ordering={self.spec.ordering.value} max_in_flight={self.max_in_flight} "
            f"unsettled={self._unsettled}>"
        )

    @property
    def unsettled(self) -> int:
        """Messages received and not yet settled (handed out, buffered or held back)."""
        return self._unsettled

    @property
    def capabilities(self) -> Capabilities:
        """The capabilities of the backend this subscription reads."""
        return self._producer.adapter.capabilities

    @property
    def health(self) -> Health:
        """The subscription's state (running, reconnecting since when and why...) and
        its time lag."""
        health = self._supervisor.health
        if self._time_lag is None:
            return health
        return dataclasses.replace(health, time_lag=self._time_lag)

    @property
    def time_lag(self) -> float | None:
        """Seconds from publish to receipt of the oldest message of the latest batch
        this subscription received: its lag as a consumer sees it, on every backend."""
        return self._time_lag

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> Subscription:
        """Declare the group and start consuming (outages ridden out as for ``get``)."""
        if self._opened:
            return self
        self._state.check()
        self._opened = True
        self._registry.add(self)
        try:
            while True:
                try:
                    await self._reopen()
                    break
                except BrokerUnavailable as exc:
                    await asyncio.sleep(self._supervisor.failed(exc))
        except BaseException:
            await self.close()
            raise
        self._supervisor.running()
        log.info("subscribed %s ordering=%s", self._where, self.spec.ordering.value)
        return self

    async def close(self) -> None:
        """Stop consuming; unsettled messages go back to the broker. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._changed.set()
        self._registry.discard(self)
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._receiving is not None:
            self._receiving.cancel()
        if self._background:
            # dead-lettering in progress is a publish and an ack: let it finish (within
            # the publish bound), so a copy that is published is also settled
            await asyncio.wait(
                set(self._background), timeout=self._producer.adapter.publish_timeout + 2
            )
        running = [t for t in (self._receiving, *self._background) if t is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, *self._closings, return_exceptions=True)
        self._background.clear()
        if self._leases is not None:
            await self._leases.stop()
        self._ready.clear()
        if self._gate is not None:
            self._gate.clear()
        consumers = [c for c in (self._consumer, *self._retired) if c is not None]
        self._consumer = None
        self._retired.clear()
        for consumer in consumers:
            await self._close_consumer(consumer)
        self._supervisor.closed()
        if self._opened:
            log.info("unsubscribed %s", self._where)

    async def __aenter__(self) -> Subscription:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- hand-out -------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        if self._closed:
            raise StopAsyncIteration
        return await self.get()

    async def get(self, timeout: float | None = None) -> Message:  # noqa: ASYNC109
        """The next message; :class:`TimeoutError` if none comes within ``timeout``.
        A receive started here goes on if ``get`` times out (nothing is lost)."""
        ready = self._ready
        if ready:  # the hot path: no wait, no timer
            msg = ready.popleft()
        elif timeout is None:
            msg = await self._next()
        else:
            async with asyncio.timeout(timeout):
                msg = await self._next()
        if self._ack_first:
            await msg.ack()
        return msg

    async def get_many(
        self,
        max_messages: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> list[Message]:
        """Wait for at least one message; return it with every message ready now, at
        most ``max_messages`` (default: no limit beyond ``max_in_flight``).

        The batch form of :meth:`get`: settle the messages with :meth:`ack_many` (or
        one by one). :class:`TimeoutError` if no message comes within ``timeout``.
        """
        if max_messages is not None and (
            isinstance(max_messages, bool) or not isinstance(max_messages, int) or max_messages < 1
        ):
            raise ConfigError("max_messages", f"must be an integer >= 1, got {max_messages!r}")
        first = await self.get(timeout)
        out = [first]
        ready = self._ready
        limit = max_messages or self.max_in_flight
        while ready and len(out) < limit:
            out.append(ready.popleft())
        if self._ack_first:
            await self.ack_many(out[1:])  # get acked the first
        return out

    async def _serve(self, dispatch: Callable[[Message], None]) -> None:
        """Hand every message to ``dispatch`` (the Worker's loop) until the subscription
        closes; raises as :meth:`get` does. A message accepted from a receive or from
        a watched consumer's callback goes to ``dispatch`` there and then, without a
        turn of the event loop to wake this task."""
        if self._ack_first:  # at_most_once: get acks each before it is handed out
            async for msg in self:
                dispatch(msg)
            return
        self._dispatch = dispatch
        ready = self._ready
        try:
            while True:
                try:
                    msg = await self._next()
                except StopAsyncIteration:
                    return
                dispatch(msg)
                while ready:
                    dispatch(ready.popleft())
        finally:
            self._dispatch = None

    async def _next(self) -> Message:
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._closed:
                raise StopAsyncIteration
            if not self._opened:
                raise SettlementError(f"subscription {self._where} is not open")
            failure, self._failure = self._failure, None
            if failure is not None:
                raise failure
            free = self.max_in_flight - self._unsettled
            if self._receiving is None and free > 0:
                consumer = self._consumer
                if consumer is not None:
                    # what the consumer holds already: no task, no wait (the hot path)
                    ready = consumer.poll(free)
                    if ready:
                        self._accept(consumer, ready)
                        continue
                if consumer is None or consumer is not self._watched or self._missed:
                    self._missed = False
                    self._start_receive(free)
                # else a watched consumer calls _on_ready when deliveries arrive
            self._changed.clear()
            self._waiting += 1
            try:
                await self._changed.wait()
            finally:
                self._waiting -= 1

    # -- receiving (one task at a time; never cancelled by a caller's timeout) -------

    async def _receive(self, free: int) -> None:
        try:
            while True:
                consumer = self._consumer
                try:
                    if consumer is None:
                        consumer = await self._reopen()
                    batch = await consumer.receive(free)
                except BrokerUnavailable as exc:
                    if consumer is not None:
                        self._retire(consumer)
                    await asyncio.sleep(self._supervisor.failed(exc))
                    continue
                self._supervisor.running()
                self._accept(consumer, batch)
                return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._failure = exc
        finally:
            self._receiving = None
            self._changed.set()

    def _start_receive(self, free: int) -> None:
        self._receiving = asyncio.get_running_loop().create_task(self._receive(free))

    def _on_ready(self, consumer: Consumer, failed: bool) -> None:
        """A watched consumer buffered deliveries, or failed. Deliveries: if a hand-out
        waits, take them now, within the free slots, as a receive would have (none is
        pending); otherwise the hand-out polls them, in bulk, when it next looks. A
        failure: a receive raises it at once (the consumer is retired, a fresh one
        opened), or once a slot is free."""
        if consumer is not self._watched or self._closed or self._receiving is not None:
            return  # retired, closing, or a pending receive returns them
        free = self.max_in_flight - self._unsettled
        if failed:
            if free > 0:
                self._start_receive(free)
            else:
                self._missed = True
            return
        if not self._waiting or free <= 0 or self._changed.is_set():
            return  # the hand-out polls them when it next looks (it is woken already)
        try:
            batch = consumer.poll(free)
            if batch:
                self._accept(consumer, batch)
                return
        except Exception as exc:  # in the native client's callback: never raise into it
            self._failure = exc
            self._changed.set()
            return
        # nothing to take after all: a receive waits for it
        self._start_receive(free)

    async def _reopen(self) -> Consumer:
        """Declare the group (again, after an outage) and open a fresh consumer."""
        await self._topology.group(self.spec, again=self._ever_opened)
        consumer: Consumer = self._new_consumer(self.spec, max_in_flight=self.max_in_flight)
        try:
            await consumer.open()
        except BaseException:
            await self._close_consumer(consumer)
            raise
        if self._closed:
            await self._close_consumer(consumer)
            raise asyncio.CancelledError
        self._consumer = consumer
        self._ever_opened = True
        self._out[consumer] = 0
        if self.spec.key_ordered and not consumer.exclusive_keys and self._gate is None:
            self._gate = KeyGate()
        if consumer.lease is not None and self._leases is None:
            self._leased = {}
            leased = self._leased
            self._leases = LeaseKeeper(consumer.lease, leased.values, self._where)
            self._leases.start()
        self._missed = False
        watched = consumer.watch(lambda failed=False: self._on_ready(consumer, failed))
        self._watched = consumer if watched else None
        return consumer

    def _retire(self, consumer: Consumer) -> None:
        """The consumer lost its broker: hand out nothing more of it; close it once
        what it handed out is settled (acks still go to it)."""
        if self._consumer is consumer:
            self._consumer = None
        if self._watched is consumer:
            self._watched = None
        stale = [m for m in self._ready if m._via is consumer]
        if stale:
            self._ready = deque(m for m in self._ready if m._via is not consumer)
        if self._gate is not None:
            stale += self._gate.drop_waiting(lambda m: m._via is consumer)
        for msg in stale:  # they go back to the broker when the consumer closes
            self._forget(msg)
        self._retired.add(consumer)
        if self._out.get(consumer, 0) <= 0:
            self._closing(consumer)

    def _accept(self, consumer: Consumer, batch: Sequence[Message]) -> None:
        count = len(batch)
        if not count:
            return
        self._unsettled += count
        self._out[consumer] += count
        limit = self.max_deliveries
        gate = self._gate
        leased = self._leased
        ready = self._ready
        isolate = self.spec.dead_letter_topic is not None
        group = self.group
        stamp = batch[0].published_at
        if stamp is not None:  # once per batch: the hot path stays per-message cheap
            self._time_lag = max(0.0, time.time() - stamp.timestamp())
        if self._telemetry is not None:
            name = self._producer.adapter.name
            self._telemetry.received(name, self.topic, self.group, count, self._time_lag)
        for msg in batch:
            msg._settler = self
            msg._via = consumer
            if leased is not None:
                leased[id(msg)] = msg
            headers = msg.headers
            if (
                isolate
                and headers
                and h.REPLAY_GROUP in headers
                and headers[h.REPLAY_GROUP] != group
            ):
                self._spawn(self._skip_replay(msg))
            elif limit is not None and msg.delivery_attempt > limit:
                self._spawn(self._dead_letter_at_limit(msg))
            elif gate is None or gate.admit(msg):
                ready.append(msg)
        dispatch = self._dispatch
        if dispatch is not None:
            while ready:
                dispatch(ready.popleft())
        # set with a dispatch too: the later deliveries of the same burst then wait in
        # the consumer (_on_ready sees the hand-out already woken) and are taken with
        # one poll when it looks, not accepted one call each
        self._changed.set()

    # -- settlement (called by Message.ack / nack / dead_letter) ----------------------

    def _check(self, msg: Message, verb: str) -> Consumer:
        if self._closed:
            raise SettlementError(
                f"cannot {verb} message {msg.id}: its subscription is closed "
                "(the message went back to the broker)"
            )
        via: Consumer = msg._via
        return via

    def _forget(self, msg: Message) -> None:
        """``msg`` leaves this subscription's books (settled, or given back)."""
        self._unsettled -= 1
        via = msg._via
        out = self._out
        left = out[via] - 1
        out[via] = left
        if self._leased is not None:
            self._leased.pop(id(msg), None)
        gate = self._gate
        if gate is not None:
            nxt = gate.release(msg)
            if nxt is not None:
                self._ready.append(nxt)
        self._changed.set()
        if left <= 0 and self._retired and via in self._retired:
            self._closing(via)

    def _settle_ack(self, msg: Message) -> Awaitable[None]:
        # not a coroutine: the batch's future is the only awaitable, one frame less
        return self._acks.ack(self._acked(msg), msg)

    def _ack_unawaited(self, msg: Message) -> None:
        """Ack ``msg`` (not settled yet) without waiting for the broker: the Worker's
        ack after a handler returned. A failed ack is logged; the broker redelivers."""
        self._acks.send(self._acked(msg), msg)

    def _acked(self, msg: Message) -> Consumer:
        """The books of an ack; the consumer it goes to."""
        if self._closed:
            self._check(msg, "ack")  # raises, naming the reason
        via: Consumer = msg._via
        msg.settlement = "ack"
        self._forget(msg)
        if self._observer is not None:
            self._observer(msg, "ack")
        return via

    async def ack_many(self, messages: Iterable[Message]) -> None:
        """Ack several messages of this subscription, with one adapter call per consumer.

        Every message is checked first (delivered by this subscription, not settled
        yet); a bad one raises :class:`~polybus.errors.SettlementError` and settles
        nothing.
        """
        batch = list(messages)
        if not batch:
            return
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
        self._check(batch[0], "ack")
        by_consumer: dict[Consumer, list[Message]] = {}
        for msg in batch:
            msg.settlement = "ack"
            self._forget(msg)
            if self._observer is not None:
                self._observer(msg, "ack")
            by_consumer.setdefault(msg._via, []).append(msg)
        for consumer, part in by_consumer.items():
            await consumer.ack(part)

    async def _settle_nack(self, msg: Message, delay: float | None) -> None:
        via = self._check(msg, "nack")
        msg.settlement = "nack"
        log.debug("nack %s id=%s delay=%s", self._where, msg.id, delay)
        await self._give_back(msg, via, delay)

    async def _give_back(self, msg: Message, via: Consumer, delay: float | None) -> None:
        if self._observer is not None:
            self._observer(msg, "nack")
        if self._gate is not None and msg.key is not None:
            self._redeliver_in_place(msg, delay)
            return
        self._forget(msg)
        await via.nack(msg, delay)

    def _redeliver_in_place(self, msg: Message, delay: float | None) -> None:
        """Key order: the nacked message stays its key's current one and comes back
        from here after ``delay``, one attempt higher (the broker still holds it)."""
        again = dataclasses.replace(msg, delivery_attempt=msg.delivery_attempt + 1, settlement=None)
        assert self._gate is not None
        self._gate.replace(msg, again)
        if self._leased is not None:
            self._leased.pop(id(msg), None)
            self._leased[id(again)] = again
        limit = self.max_deliveries
        if limit is not None and again.delivery_attempt > limit:
            self._spawn(self._dead_letter_at_limit(again))
        elif delay:
            timers = self._timers

            def due() -> None:
                timers.discard(handle)
                self._requeue(again)

            handle = asyncio.get_running_loop().call_later(delay, due)
            timers.add(handle)
        else:
            self._requeue(again)

    def _requeue(self, msg: Message) -> None:
        if self._closed:
            return
        if msg._via is not self._consumer:  # its consumer was retired: the broker has it
            self._forget(msg)
            return
        self._ready.appendleft(msg)
        self._changed.set()

    async def _settle_dead_letter(
        self,
        msg: Message,
        reason: str,
        error: BaseException | None,
        metadata: Mapping[str, str] | None,
    ) -> None:
        self._check(msg, "dead-letter")
        if self.spec.dead_letter_topic is None:
            raise SettlementError(
                f"message {msg.id} is already a dead letter: ack it, nack it or replay it "
                "(bus.replay_dead_letters)"
            )
        msg.settlement = "dead_letter"
        await self._dead_letter(msg, reason, error, metadata)

    async def _dead_letter(
        self,
        msg: Message,
        reason: str,
        error: BaseException | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """The one dead-letter path: the copy (size-checked, to the template's topic)
        is published and confirmed, and only then is the original acked. If the copy
        fails, the original comes back (never acked) and the error is raised."""
        assert self.spec.dead_letter_topic is not None
        via: Consumer = msg._via
        envelope = dead_letter_envelope(msg, reason, error, metadata)
        try:
            await self._producer.publish(self.spec.dead_letter_topic, [envelope])
        except BaseException:
            log.error(
                "dead-letter publish failed, giving the message back %s id=%s", self._where, msg.id
            )
            msg.settlement = "nack"
            delay = RETRY_AFTER_FAILED_DEAD_LETTER
            if not self._producer.adapter.capabilities.delayed_redelivery:
                delay = 0.0
            await self._give_back(msg, via, delay)
            raise
        self._forget(msg)
        emit("dead_lettered", topic=self.topic, group=self.group)
        if self._observer is not None:
            self._observer(msg, "dead_letter")
        log.warning("dead-lettered %s id=%s reason=%s", self._where, msg.id, reason)
        await self._acks.ack(via, msg)

    async def _dead_letter_at_limit(self, msg: Message) -> None:
        limit = self.max_deliveries
        msg.settlement = "dead_letter"
        try:
            await self._dead_letter(
                msg,
                f"delivery limit of {limit} reached",
                metadata={h.DLQ_ATTEMPTS: str(msg.delivery_attempt - 1)},
            )
        except Exception as exc:  # the message comes back and is tried again
            log.error("dead-lettering at the limit failed %s id=%s: %s", self._where, msg.id, exc)

    async def _skip_replay(self, msg: Message) -> None:
        """A dead letter replayed for another group: settled here, never handed out."""
        msg.settlement = "ack"
        via: Consumer = msg._via
        self._forget(msg)
        log.debug(
            "skipped replay for group %s %s id=%s",
            msg.headers.get(h.REPLAY_GROUP),
            self._where,
            msg.id,
        )
        await self._acks.ack(via, msg)

    # -- helpers --------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background settlement failed %s: %s", self._where, task.exception())

    def _closing(self, consumer: Consumer) -> None:
        self._retired.discard(consumer)
        self._out.pop(consumer, None)
        task = asyncio.get_running_loop().create_task(self._close_consumer(consumer))
        self._closings.add(task)
        task.add_done_callback(self._closings.discard)

    async def _close_consumer(self, consumer: Consumer) -> None:
        self._out.pop(consumer, None)
        await self._acks.drain(consumer)  # what was acked reaches the broker first
        try:
            await consumer.close()
        except Exception as exc:  # the broker redelivers what was not given back
            log.warning("closing a consumer failed %s: %s", self._where, exc)

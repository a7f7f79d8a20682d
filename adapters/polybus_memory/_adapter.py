"""``memory://[NAME]``: the embedded backend, a public feature with no server.

``memory://`` is private to its bus: two ``connect("memory://")`` never see each
other's messages. ``memory://NAME`` is shared by name within the process: every bus
connected to ``memory://orders`` reaches the same topics. Nothing survives the
process. See README.md for the settings and what the backend guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from polybus.errors import ConfigError, PublishError, SettlementError
from polybus.spi import (
    Adapter,
    Capabilities,
    Consumer,
    Envelope,
    GroupSpec,
    Lag,
    Message,
    parse_settings,
    parse_url,
)

from ._broker import Broker, Entry, Group, shared

DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class MemorySettings:
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    connect_timeout: float = 10.0
    visibility_timeout: float | None = None
    """Seconds an unsettled message stays with its consumer unless its lease is
    renewed (the core renews it while the message is unsettled); None: until settled
    or the subscription closes. Set it to see how code behaves with leases (SQS, Pub/Sub,
    JetStream)."""
    key_locks: bool = True
    """A key-ordered group locks a key while one of its messages is out, for every
    consumer of the group (as SQS FIFO message groups do), so key order holds with
    competing consumers. False: the broker hands messages out in publish order without
    looking at keys, as stream brokers do (Kafka partitions, RabbitMQ single active
    consumer), and polybus's own per-key hand-out keeps the order within one consumer
    only (``key_order_competing`` is then False)."""

    def __post_init__(self) -> None:
        if self.visibility_timeout is not None and self.visibility_timeout <= 0:
            raise ConfigError("visibility_timeout", "must be > 0 seconds, or none")


def capabilities(settings: MemorySettings) -> Capabilities:
    return Capabilities(
        competing_consumers=True,
        key_order=True,
        key_order_competing=settings.key_locks,
        fan_out=True,
        persistent=False,
        replay=False,
        native_delivery_count=True,
        native_dead_letter=False,
        delayed_redelivery=True,
        lag_messages=True,
        lag_seconds=True,
        broker_dedup=False,
        max_message_size=settings.max_message_size,
    )


class MemoryAdapter(Adapter):
    """The in-process adapter (see the module docstring for the sharing rule)."""

    name = "memory"

    def __init__(self, broker_name: str, settings: MemorySettings) -> None:
        self.settings = settings
        self.broker_name = broker_name
        self.broker: Broker = shared(broker_name) if broker_name else Broker("")
        self.capabilities = capabilities(settings)

    def __repr__(self) -> str:
        return f"<MemoryAdapter memory://{self.broker_name}>"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> MemoryAdapter:
        parsed = parse_url(url)
        if parsed.scheme != "memory":
            raise ConfigError("url", f"expected memory://, got {parsed.scheme}://")
        if len(parsed.hosts) > 1 or parsed.path.strip("/"):
            raise ConfigError("url", "memory:// takes one optional broker name: memory://NAME")
        settings = parse_settings(MemorySettings, {**parsed.query, **options})
        return cls(parsed.hosts[0] if parsed.hosts else "", settings)

    async def declare(self, topic: str, group: GroupSpec | None) -> None:
        self.broker.check()
        if group is None:
            self.broker.ensure_topic(topic)
        else:
            s = self.settings
            self.broker.ensure_group(
                topic, group.group, group.ordering, s.visibility_timeout, s.key_locks
            )

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        if self.broker.down:
            raise PublishError(
                f"memory://{self.broker_name}: the broker is unavailable (outage)",
                retryable=True,
                failed_ids=tuple(e.id for e in envelopes),
            )
        self.broker.publish(topic, envelopes)

    async def delete_group(self, group: GroupSpec) -> None:
        self.broker.delete_group(group.topic, group.group)

    async def lag(self, group: GroupSpec) -> Lag:
        found = self.broker.group(group.topic, group.group)
        if found is None:
            raise ConfigError("group", f"memory: no group {group.group!r} on {group.topic!r}")
        with self.broker.lock:
            waiting = found.unsettled()
        if not waiting:
            return Lag(0, None)
        oldest = min(e.envelope.published_at for e in waiting)
        return Lag(len(waiting), max(0.0, time.time() - oldest.timestamp()))

    def consumer(self, group: GroupSpec, *, max_in_flight: int) -> Consumer:
        s = self.settings
        return MemoryConsumer(self.broker, group, s.visibility_timeout, s.key_locks)


Receipt = tuple[Entry, int]
"""The entry delivered and the delivery's token."""


class MemoryConsumer(Consumer):
    def __init__(
        self, broker: Broker, spec: GroupSpec, lease: float | None, key_locks: bool
    ) -> None:
        self.broker = broker
        self.spec = spec
        self.lease = lease
        # with key locks the broker never hands out a key's next message early
        self.exclusive_keys = spec.key_ordered and key_locks
        self.group: Group | None = None
        self.closed = False

    async def open(self) -> None:
        self.broker.check()
        group = self.broker.group(self.spec.topic, self.spec.group)
        if group is None:
            raise SettlementError(f"memory: group {self.spec.group!r} was not declared")
        self.group = group

    async def receive(self, max_messages: int) -> Sequence[Message]:
        group = self.group
        if group is None or self.closed:
            raise SettlementError("memory: the consumer is not open")
        loop = asyncio.get_running_loop()
        while True:
            with self.broker.lock:
                self.broker.check()
                entries = group.take(max_messages, time.monotonic(), self)
                if entries:
                    return [self._message(e) for e in entries]
                waiter = loop.create_future()
                wake = _waker(loop, waiter)
                group.waiters.append(wake)
                due = group.next_due()
            timeout = None if due is None else max(0.0, due - time.monotonic())
            try:
                # asyncio.timeout, not wait_for: wait_for can swallow a cancellation that
                # arrives as the waiter is woken, and this receive would then wait forever
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await waiter
            finally:
                if not waiter.done() or waiter.cancelled():
                    # timed out or cancelled: drop the stale waker
                    with self.broker.lock, contextlib.suppress(ValueError):
                        group.waiters.remove(wake)

    def poll(self, max_messages: int) -> Sequence[Message]:
        group = self.group
        if group is None or self.closed:
            return ()
        with self.broker.lock:
            if self.broker.down:
                return ()
            entries = group.take(max_messages, time.monotonic(), self)
        return [self._message(e) for e in entries]

    def _message(self, entry: Entry) -> Message:
        env = entry.envelope
        # positional, in field order: the cheapest way to build the dataclass
        return Message(
            env.id,
            self.spec.topic,
            env.body,
            self.spec.group,
            env.key,
            dict(env.headers),
            env.content_type,
            env.published_at,
            entry.deliveries,
            entry,
            (entry, entry.token),
        )

    def _open_group(self) -> Group:
        if self.group is None:
            raise SettlementError("memory: the consumer is not open")
        return self.group

    async def ack(self, messages: Sequence[Message]) -> None:
        group = self.group
        if group is None:
            raise SettlementError("memory: the consumer is not open")
        broker = self.broker
        unlocked = False
        with broker.lock:
            if broker.down:
                broker.check()
            settle = group.settle
            for msg in messages:
                entry, token = msg.receipt
                if settle(entry, token, self):
                    unlocked = True
            if unlocked and group.waiters:  # a key's next message may go out now
                group.wake()

    async def nack(self, message: Message, delay: float | None) -> None:
        group = self._open_group()
        entry, token = message.receipt
        with self.broker.lock:
            self.broker.check()
            group.give_back(entry, token, self, delay or 0.0, time.monotonic())
            group.wake()

    async def extend(self, messages: Sequence[Message]) -> None:
        group = self._open_group()
        now = time.monotonic()
        with self.broker.lock:
            self.broker.check()
            for msg in messages:
                entry, token = msg.receipt
                group.extend(entry, token, self, now)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        group = self.group
        if group is None:
            return
        with self.broker.lock:
            group.release(self)
            group.wake()


def _waker(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future[None]) -> Callable[[], None]:
    """A callback that wakes ``waiter`` from any thread (brokers are shared)."""

    def settle() -> None:
        if not waiter.done():
            waiter.set_result(None)

    def wake() -> None:
        try:
            same_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            settle()
        else:
            loop.call_soon_threadsafe(settle)

    return wake

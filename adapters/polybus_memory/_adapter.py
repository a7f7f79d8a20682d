"""``memory://[NAME]``: the embedded backend, a public feature with no server.

Brokers are process-wide and named: every ``connect("memory://orders")`` in one process
reaches the same topics, so separate Bus instances see one another's messages.
``memory://`` is the default broker. Nothing survives the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from polybus import config
from polybus._deadletter import dead_letter_envelope
from polybus._message import Message
from polybus.capabilities import Capabilities, Ordering
from polybus.errors import ConfigError, SettlementError
from polybus.spi import Adapter, Consumer, Envelope, GroupSettings

from ._broker import Broker, Entry, Group, broker

DEFAULT_MAX_MESSAGE_SIZE = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class MemorySettings:
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    connect_timeout: float = 10.0


class MemoryAdapter(Adapter):
    """The in-process adapter. Per-key order, fan-out, competing consumers, delayed
    redelivery, native delivery counts and native dead-lettering at ``max_deliveries``;
    no persistence, no replay, no broker dedup."""

    name = "memory"

    def __init__(self, broker_name: str, settings: MemorySettings) -> None:
        self.settings = settings
        self.broker_name = broker_name
        self.broker: Broker = broker(broker_name)
        self.capabilities = Capabilities(
            ordering=Ordering.PER_KEY,
            fan_out=True,
            competing_consumers=True,
            persistent=False,
            replay=False,
            native_delivery_count=True,
            native_dead_letter=True,
            delayed_redelivery=True,
            broker_dedup=False,
            max_message_size=settings.max_message_size,
        )

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> MemoryAdapter:
        parsed = config.parse_url(url)
        if parsed.scheme != "memory":
            raise ConfigError("url", f"expected memory://, got {parsed.scheme}://")
        if len(parsed.hosts) > 1 or parsed.path.strip("/"):
            raise ConfigError("url", "memory:// takes one optional broker name: memory://NAME")
        settings = config.parse_settings(MemorySettings, {**parsed.query, **options})
        return cls(parsed.hosts[0] if parsed.hosts else "", settings)

    def redacted_url(self) -> str:
        return f"memory://{self.broker_name}"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ensure_topic(self, topic: str) -> None:
        self.broker.ensure_topic(topic)

    async def ensure_group(self, topic: str, group: str, settings: GroupSettings) -> None:
        self.broker.ensure_group(topic, group, settings.max_deliveries)

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        self.broker.publish(topic, envelopes)

    def consumer(self, topic: str, group: str, *, max_in_flight: int) -> Consumer:
        return MemoryConsumer(self, topic, group)


class MemoryConsumer(Consumer):
    def __init__(self, adapter: MemoryAdapter, topic: str, group: str) -> None:
        self.adapter = adapter
        self.broker = adapter.broker
        self.topic = topic
        self.group_name = group
        self.group: Group | None = None
        self.in_flight: dict[int, Entry] = {}
        self.closed = False

    async def open(self) -> None:
        self.group = self.broker.ensure_group(self.topic, self.group_name, None)

    async def fetch(self, max_messages: int) -> Sequence[Message]:
        group = self.group
        if group is None or self.closed:
            raise SettlementError("consumer is not open")
        loop = asyncio.get_running_loop()
        while True:
            with self.broker.lock:
                # checked under the lock: close() gives back in-flight entries under it,
                # so an entry taken after close would never be given back
                if self.closed:
                    raise SettlementError("consumer is closed")
                group.promote(time.monotonic())
                entries = group.take(max_messages)
                if not entries:
                    waiter = loop.create_future()
                    wake = _waker(loop, waiter)
                    group.waiters.append(wake)
                    due = group.next_due()
            if entries:
                out = await self._deliver(group, entries)
                if out:
                    return out
                continue
            timeout = None if due is None else max(0.0, due - time.monotonic())
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter, timeout)
            finally:
                if not waiter.done() or waiter.cancelled():
                    # timed out or cancelled (get(timeout=...)): drop the stale waker,
                    # or an idle consumer polling with timeouts would pile them up
                    with self.broker.lock, contextlib.suppress(ValueError):
                        group.waiters.remove(wake)

    async def _deliver(self, group: Group, entries: list[Entry]) -> list[Message]:
        limit = group.max_deliveries
        out: list[Message] = []
        poisoned: list[Entry] = []
        for entry in entries:
            if limit is not None and entry.deliveries > limit:
                poisoned.append(entry)
                continue
            self.in_flight[id(entry)] = entry
            out.append(self._message(entry, entry.deliveries))
        for entry in poisoned:
            await self._native_dead_letter(group, entry, limit or 0)
        return out

    def _message(self, entry: Entry, attempt: int) -> Message:
        env = entry.envelope
        return Message(
            id=env.id,
            topic=self.topic,
            body=env.body,
            group=self.group_name,
            key=env.key,
            headers=dict(env.headers),
            content_type=env.content_type,
            published_at=env.published_at,
            delivery_attempt=attempt,
            raw=entry,
            receipt=entry,
        )

    async def _native_dead_letter(self, group: Group, entry: Entry, limit: int) -> None:
        msg = self._message(entry, entry.deliveries - 1)
        copy = dead_letter_envelope(msg, f"delivery limit of {limit} reached")
        dlq = self.adapter.dead_letter_topic(self.topic, self.group_name)
        self.broker.publish(dlq, [copy])
        with self.broker.lock:
            group.release(entry)
            group.wake()

    def _settle(self, message: Message) -> tuple[Group, Entry]:
        entry = self.in_flight.pop(id(message.receipt), None)
        if entry is None or self.group is None:
            raise SettlementError(f"message {message.id} is not in flight on this consumer")
        return self.group, entry

    async def ack(self, message: Message) -> None:
        group, entry = self._settle(message)
        if entry.envelope.key is not None:
            with self.broker.lock:
                group.release(entry)
                group.wake()

    async def nack(self, message: Message, delay: float | None) -> None:
        group, entry = self._settle(message)
        with self.broker.lock:
            if delay:
                group.delay(entry, delay)
            else:
                group.give_back(entry)
            group.wake()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        group = self.group
        if group is None:
            return
        with self.broker.lock:
            for entry in sorted(self.in_flight.values(), key=lambda e: e.seq, reverse=True):
                group.give_back(entry)
            self.in_flight.clear()
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

"""The blocking facade: the async API with the same names, for scripts and sync code.

One event-loop thread per :class:`SyncBus` (an anyio blocking portal) runs the async
core; every sync method is one delegating call, so the two APIs cannot drift (a test
compares their signatures)::

    with polybus.sync.connect() as bus:
        bus.publish("orders", {"id": 7})
        with bus.subscribe("orders", group="billing") as sub:
            for msg in sub:
                msg.ack()

Thread-safe: a SyncBus may be shared by threads; each call runs on the portal's loop.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._bus import Bus, PublishHook
from ._bus import connect as _async_connect
from ._lag import Lag
from ._message import Envelope, Message, Outgoing
from ._pipeline.supervision import Health
from ._subscription import DeliveryMode, Subscription
from .capabilities import Capabilities, Ordering
from .telemetry import Telemetry

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["SyncBus", "SyncMessage", "SyncSubscription", "connect"]

T = TypeVar("T")


def connect(
    url: str | None = None,
    *,
    publish_retry: PublishHook | bool | None = None,
    dead_letter_topic: str | None = None,
    reconnect_timeout: float | None = None,
    telemetry: Telemetry | bool | None = None,
    **options: Any,
) -> SyncBus:
    """Connect, blocking; the same arguments as :func:`polybus.connect`."""
    bus = _async_connect(
        url,
        publish_retry=publish_retry,
        dead_letter_topic=dead_letter_topic,
        reconnect_timeout=reconnect_timeout,
        telemetry=telemetry,
        **options,
    )
    portal_cm = start_blocking_portal()
    portal = portal_cm.__enter__()
    try:
        portal.call(bus.open)
    except BaseException:
        portal_cm.__exit__(None, None, None)
        raise
    return SyncBus(bus, portal, portal_cm)


class SyncBus:
    """Blocking twin of :class:`polybus.Bus`."""

    def __init__(
        self, bus: Bus, portal: BlockingPortal, portal_cm: AbstractContextManager[BlockingPortal]
    ) -> None:
        self.bus = bus
        self._portal = portal
        self._portal_cm = portal_cm

    def __repr__(self) -> str:
        return f"<polybus.sync.SyncBus {self.bus!r}>"

    @property
    def capabilities(self) -> Capabilities:
        return self.bus.capabilities

    @property
    def backend(self) -> str:
        return self.bus.backend

    @property
    def is_open(self) -> bool:
        return self.bus.is_open

    @property
    def publish_hook(self) -> PublishHook | None:
        return self.bus.publish_hook

    @property
    def telemetry(self) -> Telemetry | None:
        return self.bus.telemetry

    def __enter__(self) -> SyncBus:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> SyncBus:
        """Connect (already done by :func:`connect`; idempotent)."""
        self._portal.call(self.bus.open)
        return self

    def close(self) -> None:
        try:
            self._portal.call(self.bus.close)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def publish(
        self,
        topic: str,
        body: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
        content_type: str | None = None,
    ) -> str:
        return self._call(
            self.bus.publish,
            topic,
            body,
            key=key,
            headers=headers,
            id=id,
            content_type=content_type,
        )

    def publish_many(self, topic: str, messages: Iterable[Outgoing | object]) -> list[str]:
        return self._call(self.bus.publish_many, topic, list(messages))

    def envelope(
        self,
        body: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
        content_type: str | None = None,
    ) -> Envelope:
        return self.bus.envelope(body, key=key, headers=headers, id=id, content_type=content_type)

    def subscribe(
        self,
        topic: str,
        *,
        group: str,
        max_in_flight: int = 64,
        delivery: DeliveryMode = "at_least_once",
        max_deliveries: int | None = None,
        ordering: Ordering | str = Ordering.NONE,
        reconnect_timeout: float | None = None,
    ) -> SyncSubscription:
        return SyncSubscription(
            self.bus.subscribe(
                topic,
                group=group,
                max_in_flight=max_in_flight,
                delivery=delivery,
                max_deliveries=max_deliveries,
                ordering=ordering,
                reconnect_timeout=reconnect_timeout,
            ),
            self._portal,
        )

    def declare(
        self, topic: str, group: str | None = None, *, ordering: Ordering | str = Ordering.NONE
    ) -> None:
        return self._call(self.bus.declare, topic, group, ordering=ordering)

    @contextmanager
    def tail(self, topic: str, *, max_in_flight: int = 64) -> Iterator[SyncSubscription]:
        manager = self.bus.tail(topic, max_in_flight=max_in_flight)
        sub = self._portal.call(manager.__aenter__)
        try:
            yield SyncSubscription(sub, self._portal)
        finally:
            self._portal.call(manager.__aexit__, None, None, None)

    def purge_dead_letters(
        self, topic: str, *, group: str, ids: Iterable[str] | None = None, idle_timeout: float = 1.0
    ) -> int:
        return self._call(
            self.bus.purge_dead_letters,
            topic,
            group=group,
            ids=None if ids is None else list(ids),
            idle_timeout=idle_timeout,
        )

    def lag(self, topic: str, group: str) -> Lag:
        return self._call(self.bus.lag, topic, group)

    def dead_letter_lag(self, topic: str, group: str) -> Lag:
        return self._call(self.bus.dead_letter_lag, topic, group)

    def dead_letter_topic(self, topic: str, group: str) -> str:
        return self.bus.dead_letter_topic(topic, group)

    def dead_letters(self, topic: str, *, group: str, max_in_flight: int = 64) -> SyncSubscription:
        return SyncSubscription(
            self.bus.dead_letters(topic, group=group, max_in_flight=max_in_flight), self._portal
        )

    def replay_dead_letters(
        self,
        topic: str,
        *,
        group: str,
        limit: int | None = None,
        idle_timeout: float = 1.0,
        ids: Iterable[str] | None = None,
    ) -> int:
        return self._call(
            self.bus.replay_dead_letters,
            topic,
            group=group,
            limit=limit,
            idle_timeout=idle_timeout,
            ids=None if ids is None else list(ids),
        )

    def _call(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return self._portal.call(functools.partial(func, *args, **kwargs))


class SyncSubscription:
    """Blocking twin of :class:`polybus.Subscription`: a context manager and iterator."""

    def __init__(self, sub: Subscription, portal: BlockingPortal) -> None:
        self.subscription = sub
        self._portal = portal

    def __enter__(self) -> SyncSubscription:
        return self.open()

    def __repr__(self) -> str:
        return f"<polybus.sync.SyncSubscription {self.subscription!r}>"

    @property
    def unsettled(self) -> int:
        return self.subscription.unsettled

    @property
    def health(self) -> Health:
        return self.subscription.health

    @property
    def capabilities(self) -> Capabilities:
        return self.subscription.capabilities

    @property
    def time_lag(self) -> float | None:
        return self.subscription.time_lag

    def open(self) -> SyncSubscription:
        self._portal.call(self.subscription.open)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._portal.call(self.subscription.close)

    def __iter__(self) -> Iterator[SyncMessage]:
        return self

    def __next__(self) -> SyncMessage:
        try:
            return SyncMessage(self._portal.call(self.subscription.__anext__), self._portal)
        except StopAsyncIteration:
            raise StopIteration from None

    def get(self, timeout: float | None = None) -> SyncMessage:
        msg = self._portal.call(functools.partial(self.subscription.get, timeout))
        return SyncMessage(msg, self._portal)

    def get_many(
        self, max_messages: int | None = None, timeout: float | None = None
    ) -> list[SyncMessage]:
        get_many = functools.partial(self.subscription.get_many, max_messages, timeout)
        return [SyncMessage(m, self._portal) for m in self._portal.call(get_many)]

    def ack_many(self, messages: Iterable[SyncMessage]) -> None:
        batch = [m.message for m in messages]
        self._portal.call(self.subscription.ack_many, batch)


class SyncMessage:
    """A delivered message with blocking settlement; fields as on :class:`Message`."""

    __slots__ = ("_portal", "message")

    def __init__(self, message: Message, portal: BlockingPortal) -> None:
        self.message = message
        self._portal = portal

    def __repr__(self) -> str:
        return f"<SyncMessage {self.message!r}>"

    id = property(lambda self: self.message.id)
    topic = property(lambda self: self.message.topic)
    group = property(lambda self: self.message.group)
    key = property(lambda self: self.message.key)
    body = property(lambda self: self.message.body)
    headers = property(lambda self: self.message.headers)
    content_type = property(lambda self: self.message.content_type)
    delivery_attempt = property(lambda self: self.message.delivery_attempt)
    raw = property(lambda self: self.message.raw)
    settled = property(lambda self: self.message.settled)
    settlement = property(lambda self: self.message.settlement)

    @property
    def published_at(self) -> datetime | None:
        return self.message.published_at

    def json(self) -> Any:
        return self.message.json()

    def text(self) -> str:
        return self.message.text()

    def decode(self, model: type[T]) -> T:
        return self.message.decode(model)

    def ack(self) -> None:
        self._portal.call(self.message.ack)

    def nack(self, delay: float | None = None) -> None:
        self._portal.call(self.message.nack, delay)

    def dead_letter(
        self,
        reason: str,
        *,
        error: BaseException | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._portal.call(
            functools.partial(self.message.dead_letter, reason, error=error, metadata=metadata)
        )

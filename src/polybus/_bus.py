"""Bus: the producer/consumer entry point over one adapter."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Generator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import _codec, _registry, config
from . import headers as h
from ._deadletter import replay_envelope
from ._lag import Lag
from ._message import NO_HEADERS, Envelope, Outgoing, make_envelope, new_id, new_ids, now
from ._producer import Producer, PublishHook, State
from ._subscription import DeliveryMode, Subscription, check_options
from ._topology import DEFAULT_DEAD_LETTER_TOPIC, Topology, check_name, check_template
from .capabilities import Capabilities, Ordering
from .errors import ConfigError, InvalidMessage
from .spi import DLQ_GROUP, Adapter
from .telemetry import Telemetry
from .telemetry import resolve as resolve_telemetry

if TYPE_CHECKING:
    from datetime import datetime
    from types import TracebackType

__all__ = ["DEFAULT_RECONNECT_TIMEOUT", "Bus", "PublishHook", "connect"]

log = logging.getLogger("polybus.bus")

DEFAULT_RECONNECT_TIMEOUT = 60.0
"""Seconds a subscription rides out a lost broker before ``get`` raises
BrokerUnavailable (a :class:`~polybus.Worker` rides out outages of any length)."""


def connect(
    url: str | None = None,
    *,
    publish_retry: PublishHook | bool | None = None,
    dead_letter_topic: str | None = None,
    reconnect_timeout: float | None = None,
    telemetry: Telemetry | bool | None = None,
    **options: Any,
) -> Bus:
    """Make a :class:`Bus` for ``url`` (or ``POLYBUS_URL``, a TOML file, ``memory://``).

    Nothing connects until the bus is entered (``async with``) or awaited: settings are
    parsed here, so a bad URL or option raises :class:`~polybus.errors.ConfigError`
    naming the field at once. ``options`` carry the adapter's settings; ``options=``
    inside them passes native client settings through untouched. ``publish_retry``
    retries retryable publish errors: ``True`` for
    :class:`~polybus.middleware.PublishRetry` with its defaults, or a configured one.
    ``dead_letter_topic`` names each group's dead-letter topic, a template with
    ``{topic}`` and ``{group}`` (default ``"{topic}.{group}.dlq"``), the same on every
    backend. ``reconnect_timeout`` is how long a subscription rides out a lost broker
    before ``get`` raises BrokerUnavailable (default 60 s; ``math.inf``: forever).
    ``telemetry`` turns on OpenTelemetry traces and metrics (:mod:`polybus.telemetry`):
    ``True`` for the global providers, or a configured ``Telemetry``.
    """
    resolved, file_options = config.resolve(url)
    merged = {**file_options, **options}
    template = dead_letter_topic or merged.pop("dead_letter_topic", None)
    if reconnect_timeout is None:
        reconnect_timeout = merged.pop("reconnect_timeout", None)
    if telemetry is None:
        telemetry = merged.pop("telemetry", None)
    parsed = config.parse_url(resolved)
    adapter_cls = _registry.load(parsed.scheme)
    adapter = adapter_cls.from_url(resolved, merged)
    if publish_retry is True:
        from .middleware.publish import PublishRetry

        publish_retry = PublishRetry()
    return Bus(
        adapter,
        url=resolved,
        publish_hook=publish_retry or None,
        dead_letter_topic=template or DEFAULT_DEAD_LETTER_TOPIC,
        reconnect_timeout=DEFAULT_RECONNECT_TIMEOUT
        if reconnect_timeout is None
        else reconnect_timeout,
        telemetry=resolve_telemetry(telemetry),
    )


class Bus:
    """A connection to one backend: publish, subscribe, read dead letters.

    Use as ``async with polybus.connect(url) as bus`` (or ``bus = await connect(url)``
    and ``await bus.close()``). Every operation on a bus that is not open raises
    :class:`~polybus.errors.BusClosed`, on every backend. Safe for concurrent use by
    many tasks of one event loop.
    """

    def __init__(
        self,
        adapter: Adapter,
        *,
        url: str | None = None,
        publish_hook: PublishHook | None = None,
        dead_letter_topic: str = DEFAULT_DEAD_LETTER_TOPIC,
        reconnect_timeout: float = DEFAULT_RECONNECT_TIMEOUT,
        telemetry: Telemetry | None = None,
    ) -> None:
        check_options(1, "at_least_once", None, reconnect_timeout)
        if reconnect_timeout is None:
            raise ConfigError(
                "reconnect_timeout", "must be a number of seconds (math.inf: forever)"
            )
        self.adapter = adapter
        self.url = config.redact(url) if url else f"{adapter.name}://"
        self.reconnect_timeout = reconnect_timeout
        self._state = State(self.url)
        self._topology = Topology(adapter, check_template(dead_letter_topic))
        self.telemetry = telemetry
        self._producer = Producer(adapter, self._topology, self._state, publish_hook, telemetry)
        self._subscriptions: set[Subscription] = set()
        self._was_open = False

    def __repr__(self) -> str:
        state = "open" if self._state.open else "closed"
        return f"<polybus.Bus {self.url} {state}>"

    @property
    def capabilities(self) -> Capabilities:
        """The adapter's frozen :class:`~polybus.Capabilities`."""
        return self.adapter.capabilities

    @property
    def backend(self) -> str:
        """The backend's name (``memory``, ``kafka``, ``rabbitmq``...)."""
        return self.adapter.name

    @property
    def is_open(self) -> bool:
        return self._state.open

    @property
    def publish_hook(self) -> PublishHook | None:
        """Wraps every confirmed publish (the producer retry); settable."""
        return self._producer.hook

    @publish_hook.setter
    def publish_hook(self, hook: PublishHook | None) -> None:
        self._producer.hook = hook

    async def open(self) -> Bus:
        """Connect (raises :class:`~polybus.errors.BrokerUnavailable`). Idempotent on an
        open bus; a closed bus cannot be opened again (:class:`~polybus.errors.BusClosed`)."""
        if self._state.open:
            return self
        if self._was_open:
            self._state.check()
        await self.adapter.open()
        self._state.open = self._was_open = True
        log.info("connected %s", self.url)
        return self

    async def close(self) -> None:
        """Close every open subscription, then flush and disconnect. Idempotent."""
        if not self._state.open:
            return
        for sub in list(self._subscriptions):
            await sub.close()
        self._state.open = False
        await self.adapter.close()
        log.info("closed %s", self.url)

    def __await__(self) -> Generator[Any, None, Bus]:
        return self.open().__await__()

    async def __aenter__(self) -> Bus:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- producing ----------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        body: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """Publish one message; return its id once the broker confirmed it.

        ``body`` is bytes, str, a pydantic model or a JSON-serialisable value (encoded,
        ``content_type`` set accordingly). Concurrent calls are pipelined by adapters
        that can; :meth:`publish_many` is the fast path for batches. A publish never
        waits longer than the backend's ``publish_timeout``: then it raises a
        retryable :class:`~polybus.errors.PublishError`.
        """
        if type(body) is bytes and key is None and headers is None and id is None:
            # nothing to encode or check: the hot path
            env = make_envelope(
                new_id(), body, None, NO_HEADERS, content_type or _codec.BYTES, now()
            )
        else:
            env = self._envelope(body, key, headers, id, content_type, now())
        await self._producer.publish_one(topic, env)
        return env.id

    async def publish_many(self, topic: str, messages: Iterable[Outgoing | object]) -> list[str]:
        """Publish a batch with one confirmation wait; return the ids in order.

        Items are :class:`~polybus.Outgoing` or bare bodies. Every item is encoded and
        checked before anything is sent, so a bad item publishes nothing. On a broker
        failure, :class:`~polybus.errors.PublishError` lists the unconfirmed ids.
        """
        items = messages if isinstance(messages, list) else list(messages)
        # one timestamp for the batch: it is published (and confirmed) as one unit
        stamp = now()
        fresh = new_ids(len(items))
        make = self._envelope
        envelopes = [
            # a bare bytes body has nothing to encode or check: the hot path
            make_envelope(fresh[i], m, None, NO_HEADERS, _codec.BYTES, stamp)
            if type(m) is bytes
            else make(
                m.body, m.key, m.headers, fresh[i] if m.id is None else m.id, m.content_type, stamp
            )
            if isinstance(m, Outgoing)
            else make(m, None, None, fresh[i], None, stamp)
            for i, m in enumerate(items)
        ]
        if envelopes:
            await self._producer.publish(topic, envelopes)
        return [e.id for e in envelopes]

    def envelope(
        self,
        body: object,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
        content_type: str | None = None,
    ) -> Envelope:
        """Encode and validate one message without publishing it."""
        return self._envelope(body, key, headers, id, content_type, now())

    @staticmethod
    def _envelope(
        body: object,
        key: str | None,
        headers: Mapping[str, str] | None,
        id: str | None,
        content_type: str | None,
        published_at: datetime,
    ) -> Envelope:
        data, ctype = _codec.encode(body, content_type)
        if headers:
            if not isinstance(headers, Mapping):
                raise InvalidMessage(f"headers must be a mapping of str to str, got {headers!r}")
            for name, value in headers.items():
                if not isinstance(name, str) or not isinstance(value, str):
                    raise InvalidMessage(f"header {name!r}: names and values must be str")
                if h.is_reserved(name):
                    raise InvalidMessage(f"header {name!r}: the prefix {h.PREFIX!r} is reserved")
            headers = dict(headers)
        if key is not None and not isinstance(key, str):
            raise InvalidMessage(f"key must be a str, got {type(key).__name__}")
        if id is not None and (not isinstance(id, str) or not id):
            raise InvalidMessage("id must be a non-empty str")
        return make_envelope(id or new_id(), data, key, headers or NO_HEADERS, ctype, published_at)

    # -- consuming ----------------------------------------------------------------

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
    ) -> Subscription:
        """A subscription of ``group`` to ``topic`` (enter it with ``async with``).

        ``ordering`` is the group's choice: ``"none"`` (the default on every backend:
        consumers share the work, a consumer may process a key's messages at once) or
        ``"key"`` (per-key order; a backend that cannot keep it raises ConfigError now).
        ``max_deliveries``: a message delivered more often goes to the dead-letter
        topic without being handed out (the poison guard passes its limit here).
        ``reconnect_timeout`` overrides the bus's (``math.inf``: ride out any outage).
        Every option is checked here: a bad one raises ConfigError naming it.
        """
        spec = self._topology.spec(topic, group, Ordering.parse(ordering))
        return Subscription(
            spec=spec,
            adapter_consumer=self.adapter.consumer,
            producer=self._producer,
            topology=self._topology,
            state=self._state,
            max_in_flight=max_in_flight,
            delivery=delivery,
            max_deliveries=max_deliveries,
            reconnect_timeout=(
                self.reconnect_timeout if reconnect_timeout is None else reconnect_timeout
            ),
            registry=self._subscriptions,
            telemetry=self.telemetry,
        )

    async def declare(
        self, topic: str, group: str | None = None, *, ordering: Ordering | str = Ordering.NONE
    ) -> None:
        """Create ``topic`` (and ``group`` on it, with its dead-letter topic) ahead of
        time; idempotent. From then on every message published reaches the group.
        ``ordering`` as for :meth:`subscribe`; a group that exists with the other
        ordering raises ConfigError where the broker stores it."""
        check_name("topic", topic)
        chosen = Ordering.parse(ordering)
        spec = None if group is None else self._topology.spec(topic, group, chosen)
        self._state.check()
        if spec is None:
            await self._topology.topic(topic)
        else:
            await self._topology.group(spec)

    async def lag(self, topic: str, group: str) -> Lag:
        """``group``'s backlog on ``topic`` from the broker: :class:`~polybus.Lag`
        (messages not yet settled, age in seconds of the oldest), each None where the
        backend cannot say (``capabilities.lag_messages`` / ``lag_seconds``). Reading it
        never disturbs the group."""
        self._state.check()
        return await self.adapter.lag(self._topology.spec(topic, group))

    async def dead_letter_lag(self, topic: str, group: str) -> Lag:
        """The dead letters waiting for ``group`` of ``topic`` (their count and the age
        of the oldest), as :meth:`lag` reports them."""
        self._state.check()
        spec = self._topology.spec(self.dead_letter_topic(topic, group), DLQ_GROUP)
        return await self.adapter.lag(spec)

    @asynccontextmanager
    async def tail(self, topic: str, *, max_in_flight: int = 64) -> AsyncIterator[Subscription]:
        """A temporary group of its own on ``topic`` (no dead-letter topic), removed on
        exit: follows new messages without taking any group's. Needs a backend that can
        delete groups (``Adapter.delete_group``)."""
        self._state.check()
        group = f"polybus-tail-{new_id()[:12]}"
        spec = replace(self._topology.spec(topic, group), dead_letter_topic=None)
        sub = Subscription(
            spec=spec,
            adapter_consumer=self.adapter.consumer,
            producer=self._producer,
            topology=self._topology,
            state=self._state,
            max_in_flight=max_in_flight,
            delivery="at_most_once",
            max_deliveries=None,
            reconnect_timeout=self.reconnect_timeout,
            registry=self._subscriptions,
            telemetry=self.telemetry,
        )
        try:
            async with sub:
                yield sub
        finally:
            await self.adapter.delete_group(spec)

    async def purge_dead_letters(
        self, topic: str, *, group: str, ids: Iterable[str] | None = None, idle_timeout: float = 1.0
    ) -> int:
        """Delete dead letters of ``group`` (those of ``ids``, or all); return how many."""
        wanted = None if ids is None else set(ids)
        count = 0
        async with self.dead_letters(topic, group=group, max_in_flight=1000) as dead:
            while True:
                try:
                    msg = await dead.get(timeout=idle_timeout)
                except TimeoutError:
                    break
                if wanted is not None and msg.id not in wanted:
                    continue  # stays: goes back when the subscription closes
                await msg.ack()
                count += 1
        log.info("purged %d dead letters topic=%s group=%s", count, topic, group)
        return count

    def dead_letter_topic(self, topic: str, group: str) -> str:
        """The topic that receives ``group``'s dead letters (a regular topic)."""
        return self._topology.dead_letter_topic(topic, group)

    def dead_letters(self, topic: str, *, group: str, max_in_flight: int = 64) -> Subscription:
        """A subscription to the dead letters of ``group`` on ``topic``: the same shape as
        :meth:`subscribe`, each message carrying the ``polybus-dlq-*`` headers."""
        check_name("group", group)
        dlq = self.dead_letter_topic(topic, group)
        return self.subscribe(dlq, group=DLQ_GROUP, max_in_flight=max_in_flight)

    async def replay_dead_letters(
        self,
        topic: str,
        *,
        group: str,
        limit: int | None = None,
        idle_timeout: float = 1.0,
        ids: Iterable[str] | None = None,
    ) -> int:
        """Republish dead letters of ``group`` to their original topic, for ``group``
        only; return how many.

        Each copy keeps id, key, headers and body (dead-letter metadata removed) and is
        addressed to ``group``: every other group of the topic settles it without
        handing it out. It is published, then the dead letter acked, so a failure loses
        nothing, and each dead letter is replayed once per call (one that fails again
        and comes back meanwhile stays for the next call). ``ids`` replays only those
        (the others stay); stops after ``limit`` replays or when none arrives for
        ``idle_timeout`` seconds.
        """
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ConfigError("limit", f"must be an integer >= 0 or None, got {limit!r}")
        wanted = None if ids is None else set(ids)
        replayed: set[str] = set()
        count = 0
        async with self.dead_letters(topic, group=group, max_in_flight=1000) as dead:
            kept = []
            while limit is None or count < limit:
                try:
                    msg = await dead.get(timeout=idle_timeout)
                except TimeoutError:
                    break
                if (wanted is not None and msg.id not in wanted) or msg.id in replayed:
                    # not chosen, or dead-lettered again by its replay during this call:
                    # it stays, and goes back when the subscription closes
                    kept.append(msg)
                    continue
                original, env = replay_envelope(msg, group)
                await self._producer.publish(original, [env])
                await msg.ack()
                replayed.add(msg.id)
                count += 1
        log.info("replayed %d dead letters topic=%s group=%s", count, topic, group)
        return count

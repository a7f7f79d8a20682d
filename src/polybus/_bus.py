"""Bus: the producer/consumer entry point over one adapter."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _codec, _registry, config
from . import headers as h
from ._deadletter import DLQ_GROUP, replay_envelope
from ._message import NO_HEADERS, Envelope, Outgoing, make_envelope, new_id, new_ids, now
from ._subscription import DeliveryMode, Subscription
from .capabilities import Capabilities
from .errors import ConfigError, InvalidMessage, MessageTooLarge
from .spi import Adapter, GroupSettings

if TYPE_CHECKING:
    from datetime import datetime
    from types import TracebackType

log = logging.getLogger("polybus.bus")

PublishHook = Callable[[Callable[[], Awaitable[None]]], Awaitable[None]]
"""Wraps one confirmed-publish call (the producer-side retry plugs in here)."""


def connect(
    url: str | None = None,
    *,
    publish_retry: PublishHook | bool | None = None,
    dead_letter_topic: str | None = None,
    **options: Any,
) -> Bus:
    """Make a :class:`Bus` for ``url`` (or ``POLYBUS_URL``, a TOML file, ``memory://``).

    Nothing connects until the bus is entered (``async with``) or awaited: settings are
    parsed here, so a bad URL or option raises :class:`~polybus.errors.ConfigError`
    naming the field at once. ``options`` carry polybus settings; ``options=`` inside
    them passes native client settings through untouched. ``publish_retry`` retries
    retryable publish errors: ``True`` for
    :class:`~polybus.middleware.PublishRetry` with its defaults, or a configured one.
    ``dead_letter_topic`` names each group's dead-letter topic, a template with
    ``{topic}`` and ``{group}`` (default ``"{topic}.{group}.dlq"``).
    """
    resolved, file_options = config.resolve(url)
    merged = {**file_options, **options}
    template = dead_letter_topic or merged.pop("dead_letter_topic", None)
    parsed = config.parse_url(resolved)
    adapter_cls = _registry.load(parsed.scheme)
    adapter = adapter_cls.from_url(resolved, merged)
    if template is not None:
        adapter.dead_letter_template = _check_template(template)
    if publish_retry is True:
        from .middleware.publish import PublishRetry

        publish_retry = PublishRetry()
    return Bus(adapter, publish_hook=publish_retry or None)


class Bus:
    """A connection to one backend: publish, subscribe, read dead letters.

    Use as ``async with polybus.connect(url) as bus`` (or ``bus = await connect(url)``
    and ``await bus.close()``). Safe for concurrent use by many tasks of one event loop.
    """

    def __init__(self, adapter: Adapter, *, publish_hook: PublishHook | None = None) -> None:
        self.adapter = adapter
        self.publish_hook = publish_hook
        self._declared: set[tuple[str, str | None]] = set()
        self._open = False

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<polybus.Bus {self.adapter.redacted_url()} {state}>"

    @property
    def capabilities(self) -> Capabilities:
        """The adapter's frozen :class:`~polybus.Capabilities`."""
        return self.adapter.capabilities

    @property
    def backend(self) -> str:
        """The backend's name (``memory``, ``kafka``, ``rabbitmq``...)."""
        return self.adapter.name

    async def open(self) -> Bus:
        """Connect (raises :class:`~polybus.errors.BrokerUnavailable`). Idempotent."""
        if not self._open:
            await self.adapter.open()
            self._open = True
            log.info("connected %s", self.adapter.redacted_url())
        return self

    async def close(self) -> None:
        """Flush and disconnect. Idempotent."""
        if self._open:
            self._open = False
            await self.adapter.close()
            log.info("closed %s", self.adapter.redacted_url())

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
        that can; :meth:`publish_many` is the fast path for batches.
        """
        env = self.envelope(body, key=key, headers=headers, id=id, content_type=content_type)
        await self._publish_envelopes(topic, [env])
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
            await self._publish_envelopes(topic, envelopes)
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

    async def _publish_envelopes(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        _check_topic(topic)
        limit = self.adapter.capabilities.max_message_size
        for env in envelopes:
            if env.size > limit:
                raise MessageTooLarge(
                    f"message {env.id} for topic {topic!r} is {env.size} bytes; "
                    f"the {self.backend} limit is {limit}",
                    size=env.size,
                    limit=limit,
                )
        await self._ensure_topic(topic)

        async def send() -> None:
            await self.adapter.publish(topic, envelopes)

        if self.publish_hook is None:
            await send()
        else:
            await self.publish_hook(send)
        if log.isEnabledFor(logging.DEBUG):
            for env in envelopes:
                log.debug("published topic=%s id=%s", topic, env.id)

    # -- consuming ----------------------------------------------------------------

    def subscribe(
        self,
        topic: str,
        *,
        group: str,
        max_in_flight: int = 64,
        delivery: DeliveryMode = "at_least_once",
        max_deliveries: int | None = None,
    ) -> Subscription:
        """A subscription of ``group`` to ``topic`` (enter it with ``async with``).

        ``max_deliveries`` sets the broker's own delivery limit where it has one (the
        poison-pill middleware passes its limit here).
        """
        _check_topic(topic)
        return Subscription(
            self,
            topic,
            group,
            max_in_flight=max_in_flight,
            delivery=delivery,
            max_deliveries=max_deliveries,
        )

    async def declare(
        self, topic: str, group: str | None = None, *, max_deliveries: int | None = None
    ) -> None:
        """Create ``topic`` (and ``group`` on it, with its dead-letter topic) ahead of
        time; idempotent. From then on every message published reaches the group.
        ``max_deliveries`` as for :meth:`subscribe`; None keeps an existing group's limit.
        """
        _check_topic(topic)
        if group is None:
            await self._ensure_topic(topic)
        else:
            await self._declare_group(topic, group, max_deliveries)

    def dead_letters(self, topic: str, *, group: str, max_in_flight: int = 64) -> Subscription:
        """A subscription to the dead letters of ``group`` on ``topic``: the same shape as
        :meth:`subscribe`, each message carrying the ``polybus-dlq-*`` headers."""
        dlq = self.adapter.dead_letter_topic(topic, group)
        return self.subscribe(dlq, group=DLQ_GROUP, max_in_flight=max_in_flight)

    async def replay_dead_letters(
        self, topic: str, *, group: str, limit: int | None = None, idle_timeout: float = 1.0
    ) -> int:
        """Republish dead letters of ``group`` to their original topic; return how many.

        Each is republished (same id, key, headers and body; dead-letter metadata
        removed) and only then acked, so a failure loses nothing. Stops after ``limit``
        messages or when none arrives for ``idle_timeout`` seconds.
        """
        count = 0
        async with self.dead_letters(topic, group=group) as dead:
            while limit is None or count < limit:
                try:
                    msg = await dead.get(timeout=idle_timeout)
                except TimeoutError:
                    break
                original, env = replay_envelope(msg)
                await self._publish_envelopes(original, [env])
                await msg.ack()
                count += 1
        log.info("replayed %d dead letters topic=%s group=%s", count, topic, group)
        return count

    async def _ensure_topic(self, topic: str) -> None:
        if (topic, None) not in self._declared:
            await self.adapter.ensure_topic(topic)
            self._declared.add((topic, None))

    async def _declare_group(self, topic: str, group: str, max_deliveries: int | None) -> None:
        if max_deliveries is not None and max_deliveries < 1:
            raise ConfigError("max_deliveries", f"must be >= 1, got {max_deliveries!r}")
        await self._declare(topic, group, GroupSettings(max_deliveries))
        if group == DLQ_GROUP:
            return  # dead letters of dead letters would only pile up topics
        dlq = self.adapter.dead_letter_topic(topic, group)
        await self._declare(dlq, DLQ_GROUP, GroupSettings())

    async def _declare(self, topic: str, group: str, settings: GroupSettings) -> None:
        await self._ensure_topic(topic)
        await self.adapter.ensure_group(topic, group, settings)


def _check_template(template: object) -> str:
    if not isinstance(template, str) or "{topic}" not in template or "{group}" not in template:
        raise ConfigError(
            "dead_letter_topic",
            f"must be a string containing {{topic}} and {{group}}, got {template!r}",
        )
    try:
        template.format(topic="t", group="g")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError("dead_letter_topic", f"invalid template {template!r}: {exc}") from exc
    return template


def _check_topic(topic: object) -> None:
    if not isinstance(topic, str) or not topic:
        raise ConfigError("topic", f"must be a non-empty string, got {topic!r}")

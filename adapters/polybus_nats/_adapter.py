"""``nats://``: NATS JetStream through nats-py (asyncio native, no threads).

Topics are limits-retention streams, groups are durable pull consumers with explicit
acks (see ``_topology`` for the mapping and ``_naming`` for the names). Publishing is
pipelined with gathered PubAcks and ``Nats-Msg-Id`` for broker dedup. The connection
reconnects forever after a server restart; confirmed messages are in the stream, so a
restart loses none of them.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from polybus.capabilities import Capabilities, Ordering
from polybus.errors import BrokerUnavailable, ConfigError, MessageTooLarge
from polybus.spi import Adapter, Consumer, Envelope, GroupSettings

from . import _errors, _headers, _settings, _topology
from ._publisher import Publisher
from ._settings import NatsSettings

if TYPE_CHECKING:
    from ._consumer import NatsConsumer

log = logging.getLogger("polybus.nats")

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""nats-server's default ``max_payload``; the live value replaces it at :meth:`open`."""
HEADER_RESERVE = 4096
"""Bytes of ``max_payload`` kept for the headers polybus adds (envelope fields,
``Nats-Msg-Id``, header framing), so ``Capabilities.max_message_size`` is a size that
always fits."""


def capabilities(settings: NatsSettings, max_payload: int) -> Capabilities:
    """What this adapter guarantees with ``settings`` on a server with ``max_payload``."""
    return Capabilities(
        ordering=Ordering.PER_QUEUE_SINGLE_CONSUMER,
        fan_out=True,
        competing_consumers=True,
        persistent=settings.storage == "file",
        replay=False,
        native_delivery_count=True,
        native_dead_letter=True,
        delayed_redelivery=True,
        broker_dedup=True,
        max_message_size=max_payload - HEADER_RESERVE,
    )


class NatsAdapter(Adapter):
    """One NATS connection (with JetStream). Safe for concurrent use by the tasks of the
    event loop that opened it."""

    name = "nats"

    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self.capabilities = capabilities(settings, DEFAULT_MAX_PAYLOAD)
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._publisher: Publisher | None = None
        self._consumers: weakref.WeakSet[NatsConsumer] = weakref.WeakSet()
        self._last_error: Exception | None = None

    def __repr__(self) -> str:
        return f"<NatsAdapter {self.redacted_url()}>"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> NatsAdapter:
        return cls(_settings.parse(url, options))

    def redacted_url(self) -> str:
        s = self.settings
        hosts = ",".join(server.removeprefix("nats://") for server in s.servers)
        auth = f"{s.user}:***@" if s.user else ("***@" if s.token else "")
        return f"nats://{auth}{hosts}"

    # -- connection -----------------------------------------------------------------

    @property
    def nc(self) -> NATS:
        if self._nc is None or self._nc.is_closed:
            raise BrokerUnavailable(f"{self.redacted_url()} is not connected")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise BrokerUnavailable(f"{self.redacted_url()} is not connected")
        return self._js

    async def open(self) -> None:
        s = self.settings
        auth: dict[str, Any] = {}
        if s.user is not None:
            auth = {"user": s.user, "password": s.password}
        elif s.token is not None:
            auth = {"token": s.token}
        native: dict[str, Any] = {
            "name": "polybus",
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            **s.options,
        }
        try:
            async with asyncio.timeout(s.connect_timeout):
                nc = await nats.connect(
                    servers=list(s.servers),
                    connect_timeout=s.connect_timeout,
                    allow_reconnect=True,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                    **auth,
                    **native,
                )
        except TypeError as exc:
            raise ConfigError("options", f"not accepted by nats.connect: {exc}") from exc
        except (Exception, TimeoutError) as exc:
            # nats-py retries inside connect(); its last error says more than our timeout
            cause = self._last_error if isinstance(exc, TimeoutError) and self._last_error else exc
            raise BrokerUnavailable(
                f"cannot connect to {self.redacted_url()} within {s.connect_timeout}s: "
                f"{_errors.describe(cause)}"
            ) from exc
        js = nc.jetstream(timeout=s.request_timeout)
        try:
            await js.account_info()
        except _errors.NATIVE as exc:
            await nc.close()
            raise ConfigError(
                "url",
                f"{self.redacted_url()} does not offer JetStream (start nats-server with -js): "
                f"{_errors.describe(exc)}",
            ) from exc
        publisher = Publisher(nc, s.request_timeout)
        await publisher.start()
        self._nc, self._js, self._publisher = nc, js, publisher
        self.capabilities = capabilities(s, nc.max_payload)

    async def close(self) -> None:
        nc = self._nc
        if nc is None:
            return
        for consumer in list(self._consumers):
            await consumer.close()
        if self._publisher is not None:
            await self._publisher.stop()
        self._nc = self._js = self._publisher = None
        if not nc.is_closed:
            try:
                await nc.flush(timeout=int(self.settings.request_timeout) or 1)
            except Exception as exc:  # closing anyway; say why acks may be late
                log.warning("flush before close failed (%s)", _errors.describe(exc))
            await nc.close()

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        # before the first connection the error is raised by open(); no need to log it
        level = logging.WARNING if self._nc is not None else logging.DEBUG
        log.log(level, "nats %s: %s", self.redacted_url(), _errors.describe(exc))

    async def _on_disconnected(self) -> None:
        if self._nc is None or self._nc.is_closed:
            return  # our own close
        log.warning("nats %s: disconnected, reconnecting", self.redacted_url())

    async def _on_reconnected(self) -> None:
        log.info("nats %s: reconnected", self.redacted_url())
        for consumer in list(self._consumers):
            consumer.reconnected()

    # -- topology -------------------------------------------------------------------

    async def ensure_topic(self, topic: str) -> None:
        ref = _topology.topic_ref(self.settings, topic)
        await _topology.ensure_stream(self.js, self.settings, ref)

    async def ensure_group(self, topic: str, group: str, settings: GroupSettings) -> None:
        ref = _topology.group_ref(self.settings, topic, group)
        await _topology.ensure_consumer(self.js, self.settings, ref, settings.max_deliveries)

    # -- producing ------------------------------------------------------------------

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        publisher = self._publisher
        if publisher is None:
            raise BrokerUnavailable(f"{self.redacted_url()} is not connected")
        ref = _topology.topic_ref(self.settings, topic)
        limit = self.nc.max_payload
        batch = []
        for env in envelopes:
            headers = _headers.encode(env, ref.stream)
            size = _headers.wire_size(headers, env.body)
            if size > limit:
                raise MessageTooLarge(
                    f"message {env.id} for topic {topic!r} takes {size} bytes with its "
                    f"headers; the server's max_payload is {limit}",
                    size=size,
                    limit=limit,
                )
            batch.append((env.id, env.body, headers))
        await publisher.publish(topic, ref.subject, batch)

    # -- consuming ------------------------------------------------------------------

    def consumer(self, topic: str, group: str, *, max_in_flight: int) -> Consumer:
        from ._consumer import NatsConsumer

        consumer = NatsConsumer(self, _topology.group_ref(self.settings, topic, group))
        self._consumers.add(consumer)
        return consumer

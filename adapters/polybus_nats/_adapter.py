"""``nats://``: NATS JetStream through nats-py (asyncio native, no threads).

Topics are limits-retention streams, groups durable pull consumers with explicit acks
(``_topology``). Publishing is pipelined with gathered PubAcks and ``Nats-Msg-Id`` for
broker dedup (``_publisher``). One connection per bus; nats-py reconnects it after a
server restart (forever by default) and buffers what is published meanwhile. While it
is down, consumers raise BrokerUnavailable and the core opens fresh ones once it is
back; confirmed messages are in the stream, so a restart loses none of them.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import nats
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from polybus.errors import BrokerUnavailable, ConfigError, MessageTooLarge
from polybus.spi import Adapter, Capabilities, Consumer, Envelope, GroupSpec, Lag

from . import _errors, _headers, _lag, _settings, _topology
from ._consumer import NatsConsumer
from ._publisher import Publisher
from ._settings import NatsSettings

__all__ = ["NatsAdapter", "capabilities"]

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
        competing_consumers=True,
        key_order=True,
        key_order_competing=True,
        fan_out=True,
        persistent=settings.storage == "file",
        replay=False,
        native_delivery_count=True,
        native_dead_letter=False,
        delayed_redelivery=True,
        lag_messages=True,
        lag_seconds=True,
        broker_dedup=True,
        max_message_size=max_payload - HEADER_RESERVE,
        stable_foreign_ids=True,  # "<stream>:<sequence>"
    )


class NatsAdapter(Adapter):
    """One NATS connection (with JetStream). Safe for concurrent use by the tasks of the
    event loop that opened it."""

    name = "nats"

    def __init__(self, settings: NatsSettings) -> None:
        self.settings = settings
        self.capabilities = capabilities(settings, DEFAULT_MAX_PAYLOAD)
        self.publish_timeout = settings.request_timeout
        self._shown = _settings.shown_url(settings)
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._publisher: Publisher | None = None
        self._consumers: weakref.WeakSet[NatsConsumer] = weakref.WeakSet()
        self._last_error: Exception | None = None
        self._refusal: Exception | None = None
        """An authorization violation seen while connecting (open() then raises
        ConfigError, not BrokerUnavailable)."""

    def __repr__(self) -> str:
        return f"<NatsAdapter {self._shown}>"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> NatsAdapter:
        return cls(_settings.parse(url, options))

    # -- connection -----------------------------------------------------------------

    def _connection(self) -> tuple[NATS, JetStreamContext]:
        """The open connection; BrokerUnavailable while it is closed or reconnecting
        (a JetStream call would only wait for its timeout)."""
        nc, js = self._nc, self._js
        if nc is None or js is None or nc.is_closed:
            raise BrokerUnavailable(f"{self._shown} is not connected")
        if not nc.is_connected:
            raise BrokerUnavailable(f"{self._shown}: the connection is lost, reconnecting")
        return nc, js

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
                    closed_cb=self._on_disconnected,
                    **auth,
                    **native,
                )
        except TypeError as exc:
            raise ConfigError("options", f"not accepted by nats.connect: {exc}") from exc
        except (Exception, TimeoutError) as exc:
            # nats-py retries inside connect(); its last error says more than our timeout
            cause = self._last_error if isinstance(exc, TimeoutError) and self._last_error else exc
            if self._refusal is not None or _errors.refused(exc):
                raise ConfigError(
                    "url",
                    f"{self._shown} refused the credentials (authorization violation): "
                    "check the URL's user:password@ or token@",
                ) from exc
            raise BrokerUnavailable(
                f"cannot connect to {self._shown} within {s.connect_timeout}s: "
                f"{_errors.describe(cause)}"
            ) from exc
        js = nc.jetstream(timeout=s.request_timeout)
        try:
            await js.account_info()
        except _errors.NATIVE as exc:
            await nc.close()
            raise ConfigError(
                "url",
                f"{self._shown} does not offer JetStream (start nats-server with -js): "
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
        for consumer in list(self._consumers):  # the core closed them; idempotent
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
        if self._nc is None and _errors.refused(exc):
            self._refusal = exc
        # before the first connection the error is raised by open(); no need to log it
        level = logging.WARNING if self._nc is not None else logging.DEBUG
        log.log(level, "nats %s: %s", self._shown, _errors.describe(exc))

    async def _on_disconnected(self) -> None:
        if self._nc is None:
            return  # our own close, or before open() returned
        if not self._nc.is_closed:
            log.warning("nats %s: disconnected, reconnecting", self._shown)
        for consumer in list(self._consumers):
            consumer.connection_lost()  # its receive raises BrokerUnavailable

    async def _on_reconnected(self) -> None:
        log.info("nats %s: reconnected", self._shown)

    # -- topology -------------------------------------------------------------------

    async def declare(self, topic: str, group: GroupSpec | None) -> None:
        _, js = self._connection()
        if group is None:
            await _topology.ensure_stream(js, self.settings, self._topic(topic))
        else:
            ref = _topology.group_ref(self.settings, group.topic, group.group, group.ordering)
            await _topology.ensure_consumer(js, self.settings, ref)

    def _topic(self, topic: str) -> _topology.TopicRef:
        return _topology.topic_ref(self.settings, topic)

    # -- producing ------------------------------------------------------------------

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        publisher, nc = self._publisher, self._nc
        if publisher is None or nc is None or nc.is_closed:
            raise BrokerUnavailable(f"{self._shown} is not connected")
        ref = self._topic(topic)
        limit = nc.max_payload
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
        # while reconnecting nats-py buffers the messages: confirmed once it is back
        await publisher.publish(topic, ref.subject, batch)

    # -- consuming ------------------------------------------------------------------

    async def lag(self, group: GroupSpec) -> Lag:
        """The group's consumer info and one stream message (README.md, "Lag")."""
        _, js = self._connection()
        ref = _topology.group_ref(self.settings, group.topic, group.group, group.ordering)
        return await _lag.lag(js, ref)

    async def delete_group(self, group: GroupSpec) -> None:
        """Delete the group's durable consumer; one that is not there is fine."""
        _, js = self._connection()
        ref = _topology.group_ref(self.settings, group.topic, group.group, group.ordering)
        try:
            await js.delete_consumer(ref.topic.stream, ref.consumer)
        except nats.js.errors.NotFoundError:
            return
        except _errors.NATIVE as exc:
            raise _errors.unavailable(exc, "delete group") from exc

    def consumer(self, group: GroupSpec, *, max_in_flight: int) -> Consumer:
        nc, js = self._nc, self._js
        if nc is None or js is None:
            raise BrokerUnavailable(f"{self._shown} is not connected")
        ref = _topology.group_ref(self.settings, group.topic, group.group, group.ordering)
        consumer = NatsConsumer(nc, js, ref, self.settings)
        self._consumers.add(consumer)
        return consumer

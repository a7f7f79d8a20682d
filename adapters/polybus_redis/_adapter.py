"""``redis://``: Redis Streams through redis-py's asyncio client.

A topic is a stream (key ``<key_prefix><topic>``), a group a consumer group on it,
created at the stream's end; every group reads every entry and the consumers of a group
compete (:mod:`._consumer`). A batch is published with one pipelined round trip of XADDs.
Whether confirmed entries survive a restart is the server's configuration (an
append-only file), read at :meth:`RedisAdapter.open`. See README.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from polybus.errors import BrokerUnavailable, ConfigError
from polybus.spi import Adapter, Capabilities, Consumer, Envelope, GroupSpec, Lag, Ordering

from . import _errors, _settings, _wire
from ._consumer import RedisConsumer, Scripts
from ._settings import RedisSettings

__all__ = ["RedisAdapter", "capabilities"]

log = logging.getLogger("polybus.redis")

KEY_ORDER_REFUSAL = (
    "Redis consumer groups have no key affinity (any consumer takes any entry, and a "
    "reclaimed entry overtakes later ones), so per-key order cannot be kept; use "
    "ordering='none', or a backend with key order (Kafka, RabbitMQ, NATS, Pub/Sub, SQS FIFO)"
)
MIN_VERSION = (7, 0)


def capabilities(settings: RedisSettings, persistent: bool, max_size: int) -> Capabilities:
    """What this adapter guarantees with ``settings`` on a server that keeps an
    append-only file (``persistent``) and takes values of ``max_size`` bytes."""
    return Capabilities(
        competing_consumers=True,
        key_order=False,
        key_order_competing=False,
        fan_out=True,
        persistent=persistent,
        replay=False,  # entries stay (within maxlen), but polybus has no replay API
        native_delivery_count=True,
        native_dead_letter=False,
        delayed_redelivery=True,
        max_delay=settings.claim_idle,
        broker_dedup=False,
        max_message_size=min(settings.max_message_size, max_size),
        lag_messages=True,
        lag_seconds=True,
        stable_foreign_ids=True,  # the entry id
    )


class RedisAdapter(Adapter):
    """One connection pool to one Redis server."""

    name = "redis"

    def __init__(self, settings: RedisSettings) -> None:
        self.settings = settings
        self.capabilities = capabilities(
            settings, settings.require_persistence, settings.max_message_size
        )
        self.key_order_refusal = KEY_ORDER_REFUSAL
        self.publish_timeout = settings.publish_timeout
        self._client: Redis | None = None
        self._scripts: Scripts | None = None

    def __repr__(self) -> str:
        return f"<RedisAdapter {self.settings.url}>"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> RedisAdapter:
        return cls(_settings.parse(url, options))

    def _connected(self) -> Redis:
        if self._client is None:
            raise BrokerUnavailable(f"{self.settings.url} is not connected")
        return self._client

    async def open(self) -> None:
        client = _settings.client(self.settings)
        try:
            self.capabilities = await self._check(client)
        except BaseException:
            await client.aclose()
            raise
        self._client, self._scripts = client, Scripts(client)

    async def _check(self, client: Redis) -> Capabilities:
        """Reach the server within ``connect_timeout``; its version and configuration."""
        s = self.settings
        async with _errors.bounded(s.connect_timeout, f"connecting to {s.url}"):
            info = await client.info("server")
            config = await self._config(client)
        version = tuple(int(p) for p in str(info.get("redis_version", "0.0")).split(".")[:2])
        if version < MIN_VERSION:
            raise ConfigError("url", f"{s.url} runs Redis {version}; 7.0 or later is needed")
        persistent = config.get("appendonly") == "yes"
        if s.require_persistence and config and not persistent:
            raise ConfigError(
                "require_persistence",
                f"{s.url} keeps no append-only file (appendonly no): confirmed messages "
                "would not survive a restart",
            )
        limit = int(config.get("proto-max-bulk-len", s.max_message_size))
        return capabilities(s, persistent or s.require_persistence, limit)

    async def _config(self, client: Redis) -> dict[str, str]:
        """appendonly and proto-max-bulk-len; empty if CONFIG is refused (managed
        services often do): persistence then counts as absent unless required."""
        try:
            found = await client.config_get("appendonly")
            found.update(await client.config_get("proto-max-bulk-len"))
        except _errors.NATIVE as exc:
            if _errors.transient(exc):
                raise
            log.warning(
                "%s refuses CONFIG GET (%s): cannot tell whether it persists; %s",
                self.settings.url,
                _errors.describe(exc),
                "trusting require_persistence"
                if self.settings.require_persistence
                else "counting it as not persistent",
            )
            return {}
        return {str(k): str(v) for k, v in found.items()}

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- topology -------------------------------------------------------------------

    def _key(self, topic: str) -> str:
        return self.settings.key_prefix + topic

    async def declare(self, topic: str, group: GroupSpec | None) -> None:
        client, key = self._connected(), self._key(topic)
        if group is not None and group.ordering is Ordering.KEY:
            raise ConfigError("ordering", f"redis: {KEY_ORDER_REFUSAL}")
        async with _errors.bounded(self.publish_timeout, f"declaring {key!r}"):
            if group is None:
                kind = _text(await client.type(key))
                if kind not in ("none", "stream"):
                    raise ConfigError("topic", f"the key {key!r} of topic {topic!r} is a {kind}")
                return
            try:
                await client.xgroup_create(key, group.group, id="$", mkstream=True)
            except ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise
                # the group exists already: it keeps its position

    async def delete_group(self, group: GroupSpec) -> None:
        """XGROUP DESTROY: the group and its pending entries; the stream stays."""
        client, key = self._connected(), self._key(group.topic)
        async with _errors.bounded(self.publish_timeout, f"deleting a group of {key!r}"):
            if await client.exists(key):
                await client.xgroup_destroy(key, group.group)

    # -- producing ------------------------------------------------------------------

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        client = self._connected()
        key, maxlen = self._key(topic), self.settings.maxlen
        batch = [_wire.encode(env) for env in envelopes]  # InvalidMessage: nothing sent
        ids = tuple(env.id for env in envelopes)
        try:
            async with asyncio.timeout(self.settings.publish_timeout):
                pipe = client.pipeline(transaction=False)
                for fields in batch:
                    pipe.xadd(key, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
                results = await pipe.execute(raise_on_error=False)
        except _errors.NATIVE as exc:
            raise _errors.publish_error(exc, topic, ids) from exc
        failed = [(i, r) for i, r in zip(ids, results, strict=True) if isinstance(r, Exception)]
        if failed:
            raise _errors.publish_error(failed[0][1], topic, tuple(i for i, _ in failed))

    # -- consuming ------------------------------------------------------------------

    def consumer(self, group: GroupSpec, *, max_in_flight: int) -> Consumer:
        client, scripts = self._connected(), self._scripts
        assert scripts is not None
        return RedisConsumer(client, scripts, self.settings, group)

    async def lag(self, group: GroupSpec) -> Lag:
        """XINFO GROUPS: ``lag`` (not delivered yet) + ``pending`` (delivered, not
        acked); the age of the oldest pending entry, else of the next undelivered one,
        from its id's time part."""
        client, key = self._connected(), self._key(group.topic)
        async with _errors.bounded(self.publish_timeout, f"reading the lag of {key!r}"):
            try:
                groups = await client.xinfo_groups(key)
            except ResponseError as exc:
                raise ConfigError("group", f"redis: no stream {key!r} ({exc})") from exc
            found = next((g for g in groups if _text(g["name"]) == group.group), None)
            if found is None:
                raise ConfigError("group", f"redis: no group {group.group!r} on {key!r}")
            waiting, pending = found.get("lag"), int(found["pending"])
            oldest = None
            if pending:
                oldest = (await client.xpending(key, group.group))["min"]
            elif waiting:
                after = "(" + _text(found["last-delivered-id"])
                entries = await client.xrange(key, min=after, count=1)
                oldest = entries[0][0] if entries else None
        messages = None if waiting is None else int(waiting) + pending
        age = None
        if oldest is not None and _text(oldest).partition("-")[0].isdigit():
            age = max(0.0, time.time() - int(_text(oldest).partition("-")[0]) / 1000)
        return Lag(messages, age)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

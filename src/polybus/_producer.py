"""The publish path every message takes: checks, topic declaration, the retry hook and
a bound on the time a publish may take."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from ._coalesce import Coalescer
from ._message import Envelope
from ._topology import Topology, check_name
from .errors import BusClosed, MessageTooLarge, PublishError
from .spi import Adapter

if TYPE_CHECKING:
    from .telemetry import Telemetry

__all__ = ["PUBLISH_GRACE", "Producer", "PublishHook"]

log = logging.getLogger("polybus.bus")

PublishHook = Callable[[Callable[[], Awaitable[None]]], Awaitable[None]]
"""Wraps one confirmed-publish call (the producer-side retry plugs in here)."""

PUBLISH_GRACE = 1.0
"""Seconds past the adapter's ``publish_timeout`` before the core gives up on a publish
(so the adapter's own, more precise, timeout error comes first)."""


class State:
    """Whether a bus is open, shared by everything that works through it."""

    __slots__ = ("open", "where")

    def __init__(self, where: str) -> None:
        self.where = where
        self.open = False

    def check(self) -> None:
        if not self.open:
            raise BusClosed(
                f"the bus {self.where} is not open (enter it with `async with "
                "polybus.connect(...)`, or await bus.open(); a closed bus stays closed)"
            )


class Producer:
    """Publishes envelopes for a bus: the topic is checked and declared, every size
    checked against the backend's limit before anything is sent, then the adapter
    publishes (through ``hook``, the producer retry, if set) within its
    ``publish_timeout``."""

    def __init__(
        self,
        adapter: Adapter,
        topology: Topology,
        state: State,
        hook: PublishHook | None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.adapter = adapter
        self.topology = topology
        self.state = state
        self.hook = hook
        self.telemetry = telemetry
        self._coalescer = Coalescer(self._send_now)
        self._limit = adapter.capabilities.max_message_size

    async def publish_one(self, topic: str, env: Envelope) -> None:
        """Publish one envelope: :meth:`publish` of ``[env]``, with the fewest steps
        when no hook or telemetry wraps it (every awaited ``Bus.publish`` takes this
        path, and 500 concurrent ones are 500 passes through it)."""
        if self.hook is not None or self.telemetry is not None or not self.state.open:
            await self.publish(topic, [env])
            return
        topology = self.topology
        if type(topic) is not str or topic not in topology.known:
            check_name("topic", topic)  # (an unhashable one never meets the set)
            await topology.topic(topic)
        size = env.size
        if size > self._limit:
            raise self._too_large(topic, env)
        await self._coalescer.publish(topic, env, size)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("published topic=%s id=%s", topic, env.id)

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        self.state.check()
        check_name("topic", topic)
        if self.telemetry is None:
            await self._publish(topic, envelopes)
            return
        with self.telemetry.publishing(self.adapter.name, topic, envelopes) as stamped:
            await self._publish(topic, stamped)

    async def _publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        limit = self._limit
        for env in envelopes:
            if env.size > limit:
                raise self._too_large(topic, env)
        await self.topology.topic(topic)

        async def send() -> None:
            await self._send(topic, envelopes)

        if self.hook is None:
            await send()
        else:
            await self.hook(send)
        if log.isEnabledFor(logging.DEBUG):
            for env in envelopes:
                log.debug("published topic=%s id=%s", topic, env.id)

    def _too_large(self, topic: str, env: Envelope) -> MessageTooLarge:
        return MessageTooLarge(
            f"message {env.id} for topic {topic!r} is {env.size} bytes; "
            f"the {self.adapter.name} limit is {self._limit}",
            size=env.size,
            limit=self._limit,
        )

    async def _send(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        if len(envelopes) == 1:
            # concurrent single publishes share one adapter call (see _coalesce)
            env = envelopes[0]
            await self._coalescer.publish(topic, env, env.size)
        else:
            await self._send_now(topic, envelopes)

    async def _send_now(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        self.state.check()
        timeout = self.adapter.publish_timeout
        try:
            async with asyncio.timeout(timeout + PUBLISH_GRACE):
                await self.adapter.publish(topic, envelopes)
        except TimeoutError:
            raise PublishError(
                f"publish of {len(envelopes)} message(s) to topic {topic!r} not confirmed "
                f"by {self.adapter.name} within {timeout:g}s (publish_timeout)",
                retryable=True,
                failed_ids=tuple(e.id for e in envelopes),
            ) from None

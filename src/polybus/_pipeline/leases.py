"""Lease keeping: unsettled messages stay with their consumer while a handler works.

Brokers with leases (SQS visibility, Pub/Sub ack deadlines, JetStream ack wait) hand
a message to another consumer when its lease runs out. The keeper renews the lease of
every unsettled message of a subscription each third of the lease, in one
:meth:`~polybus.spi.Consumer.extend` call per consumer, so a long handler is never
redelivered behind its back, while a dead process's messages come back after one
lease. A failed renewal is logged and retried at the next tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from .._message import Message

__all__ = ["LeaseKeeper"]

log = logging.getLogger("polybus.subscription")


class LeaseKeeper:
    """Renews leases of the messages ``unsettled()`` returns, every ``lease / 3``."""

    def __init__(self, lease: float, unsettled: Callable[[], Iterable[Message]], where: str):
        self.period = max(0.05, lease / 3)
        self._unsettled = unsettled
        self._where = where
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def renew(self) -> None:
        """Renew every unsettled message's lease now (one call per consumer)."""
        by_consumer: dict[int, tuple[object, list[Message]]] = {}
        for msg in list(self._unsettled()):
            entry = by_consumer.setdefault(id(msg._via), (msg._via, []))
            entry[1].append(msg)
        for consumer, batch in by_consumer.values():
            try:
                await consumer.extend(batch)  # type: ignore[attr-defined]
            except Exception as exc:  # the next tick retries; the lease is the backstop
                log.warning(
                    "lease renewal failed %s (%d messages): %s", self._where, len(batch), exc
                )

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            await self.renew()

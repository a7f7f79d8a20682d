"""Poison-pill guard: dead-letter a message delivered too often, without running it.

A message that crashes the process is never acked or nacked: it just comes back. The
guard sees its attempt number before the handler runs; past ``max_deliveries`` the
message goes to the dead-letter destination instead. The attempt number is the
broker's own ``delivery_attempt`` where ``Capabilities.native_delivery_count`` says it
survives consumer crashes; otherwise the guard counts deliveries in its store, keyed
by topic, group and message id, and records each one *before* the handler runs, so a
crash inside the handler is counted too. A delivery that an inner middleware deferred
without it being a failure (the idempotency middleware sending back the twin of a
message in progress) is taken back out of the store count, where the store can
(``decr``, every built-in store); a broker's own count includes it regardless, which
is why such deferrals are made rare (one per lease, not one per second).
"""

from __future__ import annotations

import logging
from typing import Literal

from .. import headers as h
from .._message import Message
from .._worker import Handler
from ..errors import ConfigError
from ..stores.base import Store, UncountingStore
from ..stores.memory import MemoryStore
from ._common import capabilities_of, scope, watch_deferral

__all__ = ["PoisonGuard"]

log = logging.getLogger("polybus.middleware.poison")

Counting = Literal["auto", "broker", "store"]


class PoisonGuard:
    """Dead-letter messages delivered more than ``max_deliveries`` times.

    ``counting``: ``"auto"`` (the store only when the backend has no native delivery
    count), ``"broker"`` (always ``delivery_attempt``) or ``"store"`` (always the
    store, for a backend whose count you do not trust). ``store`` should be durable
    (SQLite, Redis, Postgres): a :class:`~polybus.stores.MemoryStore` (the default)
    forgets its counts with the crash it is meant to survive. A count is forgotten on
    success, or ``ttl`` seconds after its last delivery.

    The :class:`~polybus.Worker` also passes ``max_deliveries`` to the subscription,
    so backends with a native delivery limit dead-letter at the same point natively.
    """

    def __init__(
        self,
        max_deliveries: int = 10,
        *,
        store: Store | None = None,
        counting: Counting = "auto",
        ttl: float = 7 * 24 * 3600.0,
    ) -> None:
        if not isinstance(max_deliveries, int) or max_deliveries < 1:
            raise ConfigError("max_deliveries", f"must be an integer >= 1, got {max_deliveries!r}")
        if counting not in ("auto", "broker", "store"):
            raise ConfigError("counting", f"{counting!r} is not auto, broker or store")
        self.max_deliveries = max_deliveries
        self.store: Store = store if store is not None else MemoryStore()
        self.counting: Counting = counting
        self.ttl = ttl
        self._warned = False
        self._warned_uncount = False

    def __repr__(self) -> str:
        return f"<PoisonGuard max_deliveries={self.max_deliveries} counting={self.counting}>"

    def _counts_in_store(self, msg: Message) -> bool:
        if self.counting != "auto":
            return self.counting == "store"
        caps = capabilities_of(msg)
        if caps is None or caps.native_delivery_count:
            return False
        if isinstance(self.store, MemoryStore) and not self._warned:
            self._warned = True
            log.warning(
                "topic=%s group=%s: the backend has no native delivery count and the poison "
                "guard counts in a MemoryStore, which a crash erases; pass a durable store",
                msg.topic,
                msg.group,
            )
        return True

    def __call__(self, handler: Handler) -> Handler:
        limit = self.max_deliveries

        async def guarded(msg: Message) -> None:
            counted = self._counts_in_store(msg)
            if counted:
                # recorded before the handler runs: a crash inside it still counts
                attempt = await self.store.incr(f"poison:{scope(msg)}", msg.id, self.ttl)
                attempt = max(attempt, msg.delivery_attempt)
            else:
                attempt = msg.delivery_attempt
            if attempt > limit:
                await msg.dead_letter(
                    f"poison message: delivery {attempt} exceeds max_deliveries={limit}",
                    metadata={h.DLQ_ATTEMPTS: str(attempt - 1)},
                )
                if counted:
                    await self.store.reset(f"poison:{scope(msg)}", msg.id)
                return
            with watch_deferral() as watch:
                await handler(msg)
            if counted and msg.settlement in (None, "ack"):
                await self.store.reset(f"poison:{scope(msg)}", msg.id)
            elif counted and watch.seen:
                await self._uncount(msg)

        return guarded

    async def _uncount(self, msg: Message) -> None:
        """Take back the count of a deferred delivery: it was not an attempt."""
        if isinstance(self.store, UncountingStore):
            await self.store.decr(f"poison:{scope(msg)}", msg.id)
        elif not self._warned_uncount:
            self._warned_uncount = True
            log.warning(
                "topic=%s group=%s: %s cannot take a count back (no decr), so deliveries "
                "deferred by the idempotency middleware count toward max_deliveries",
                msg.topic,
                msg.group,
                type(self.store).__name__,
            )

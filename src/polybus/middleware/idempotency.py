"""Idempotency: run the handler once per message even when the broker delivers twice.

Strategies (what makes two deliveries "the same"):

* ``ProcessedIds(ttl=None)``: the message id (plus the replay count of a replayed dead
  letter) was processed before; remembered forever or for ``ttl`` seconds;
* ``Sequences(header=polybus-sequence)``: per entity (the message key), anything at or
  below the highest sequence processed is a duplicate (stale or repeated);
* ``TimeWindow(seconds, by="content")``: the same fingerprint (key plus body hash, or
  the id with ``by="id"``) processed less than ``seconds`` ago; after the window the
  same content is processed again (repeated commands within a window collapse).

The processed marker is written only after the handler succeeded, so a failed attempt
never makes its redelivery look like a duplicate. While the handler runs, an
in-progress lease keeps a concurrent twin (a redelivery racing the first delivery) from
running too: the twin is nacked with ``busy_delay`` and comes back after the lease
holder finished. A duplicate is acked without running the handler, never silently:
each skip logs one INFO line on ``polybus.middleware.idempotency`` with the topic,
group, message id and strategy.

``atomic=True`` (SQL stores, ``ProcessedIds`` only) runs the handler inside a store
transaction: the handler writes its effect through
:func:`polybus.stores.current_transaction`, and the effect and the marker commit
together or not at all; the marker's unique key is the lease.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .. import headers as h
from .._message import Message
from .._worker import Handler
from ..errors import ConfigError, Reject
from ..stores.base import (
    Claim,
    Store,
    TransactionalStore,
    reset_transaction,
    set_transaction,
)
from ._common import deferred, processing_id, scope

__all__ = ["Idempotency", "ProcessedIds", "Sequences", "TimeWindow"]

log = logging.getLogger("polybus.middleware.idempotency")


@dataclass(frozen=True, slots=True)
class ProcessedIds:
    """Deduplicate by message id; forget a processed id after ``ttl`` seconds if set."""

    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class Sequences:
    """Deduplicate by a monotonic sequence per entity (the message key) in ``header``."""

    header: str = h.SEQUENCE


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Deduplicate the same fingerprint within ``seconds``."""

    seconds: float
    by: Literal["content", "id"] = "content"


Strategy = ProcessedIds | Sequences | TimeWindow


class Idempotency:
    """Skip messages already processed, by ``strategy``, using ``store``.

    ``lease`` bounds how long a crashed holder blocks its twins (keep it above the
    longest handler run). Sets ``provides_idempotency`` for
    ``delivery="effectively_once"``.
    """

    provides_idempotency = True

    def __init__(
        self,
        store: Store,
        strategy: Strategy | None = None,
        *,
        lease: float = 60.0,
        busy_delay: float = 1.0,
        atomic: bool = False,
    ) -> None:
        strategy = strategy if strategy is not None else ProcessedIds()
        if not isinstance(strategy, ProcessedIds | Sequences | TimeWindow):
            raise ConfigError(
                "strategy", f"{strategy!r} is not ProcessedIds, Sequences or TimeWindow"
            )
        if isinstance(strategy, TimeWindow) and not strategy.seconds > 0:
            raise ConfigError("strategy", "TimeWindow.seconds must be > 0")
        if not lease > 0:
            raise ConfigError("lease", f"must be > 0, got {lease!r}")
        if atomic and not isinstance(store, TransactionalStore):
            raise ConfigError(
                "atomic", f"{type(store).__name__} cannot join a transaction; use a SQL store"
            )
        if atomic and not isinstance(strategy, ProcessedIds):
            raise ConfigError("atomic", "atomic processing supports the ProcessedIds strategy")
        self.store = store
        self.strategy = strategy
        self.lease = lease
        self.busy_delay = busy_delay
        self.atomic = atomic

    def __repr__(self) -> str:
        return f"<Idempotency {self.strategy!r} store={self.store!r} atomic={self.atomic}>"

    def __call__(self, handler: Handler) -> Handler:
        if self.atomic:
            return self._atomic(handler)
        if isinstance(self.strategy, Sequences):
            return self._sequences(handler, self.strategy)
        if isinstance(self.strategy, TimeWindow):
            return self._claims(handler, "window", self.strategy.seconds, self._fingerprint)
        return self._claims(handler, "ids", self.strategy.ttl, processing_id)

    def _fingerprint(self, msg: Message) -> str:
        assert isinstance(self.strategy, TimeWindow)
        if self.strategy.by == "id":
            return processing_id(msg)
        digest = hashlib.sha256(msg.body)
        digest.update(b"\x00" + (msg.key or "").encode())
        return digest.hexdigest()

    def _claims(
        self,
        handler: Handler,
        kind: str,
        ttl: float | None,
        identify: Callable[[Message], str],
    ) -> Handler:
        store, lease = self.store, self.lease

        async def deduplicating(msg: Message) -> None:
            where = f"{kind}:{msg.topic}/{msg.group or ''}"
            key = identify(msg)
            claim = await store.claim(where, key, lease)
            if claim is not Claim.CLAIMED:
                await self._not_claimed(msg, claim)
                return
            try:
                await handler(msg)
            except BaseException:
                await store.release(where, key)
                raise
            if msg.settlement is None or msg.settlement == "ack":
                await store.complete(where, key, ttl)
            else:  # nacked or dead-lettered: not processed
                await store.release(where, key)

        return deduplicating

    def _sequences(self, handler: Handler, strategy: Sequences) -> Handler:
        store, lease = self.store, self.lease

        async def in_sequence(msg: Message) -> None:
            entity, seq = _sequence_of(msg, strategy.header)
            where = scope(msg)
            stored = await store.sequence(f"seq:{where}", entity)
            if stored is not None and seq <= stored:
                self._skipped(msg, f" seq={seq} highest={stored}")
                return
            lease_key = f"{entity}#{seq}"
            claim = await store.claim(f"seqlease:{where}", lease_key, lease)
            if claim is not Claim.CLAIMED:
                await self._not_claimed(msg, claim)
                return
            try:
                # re-check under the lease: a twin may have finished in between
                stored = await store.sequence(f"seq:{where}", entity)
                if stored is not None and seq <= stored:
                    self._skipped(msg, f" seq={seq} highest={stored}")
                    return
                await handler(msg)
                if msg.settlement is None or msg.settlement == "ack":
                    await store.advance(f"seq:{where}", entity, seq)
            finally:
                await store.release(f"seqlease:{where}", lease_key)

        return in_sequence

    def _atomic(self, handler: Handler) -> Handler:
        store = self.store
        assert isinstance(store, TransactionalStore)
        assert isinstance(self.strategy, ProcessedIds)
        ttl = self.strategy.ttl

        async def transactional(msg: Message) -> None:
            async with store.transaction() as tx:
                # the marker's unique key is the lease: a twin's insert waits for this tx
                if not await store.mark(tx, f"ids:{scope(msg)}", processing_id(msg), ttl):
                    self._skipped(msg, " atomic")
                    return
                token = set_transaction(tx)
                try:
                    await handler(msg)
                finally:
                    reset_transaction(token)
                if msg.settlement not in (None, "ack"):
                    raise _Undo()  # nacked or dead-lettered: roll the marker back
            return

        async def undoable(msg: Message) -> None:
            with contextlib.suppress(_Undo):
                await transactional(msg)

        return undoable

    def _skipped(self, msg: Message, detail: str = "") -> None:
        """The one log line of a skipped duplicate (the Worker then acks it)."""
        log.info(
            "duplicate skipped topic=%s group=%s id=%s strategy=%s%s",
            msg.topic,
            msg.group,
            msg.id,
            type(self.strategy).__name__,
            detail,
        )

    async def _not_claimed(self, msg: Message, claim: Claim) -> None:
        if claim is Claim.DONE:
            self._skipped(msg)
            return  # the Worker acks it
        log.info(
            "twin in progress, retrying later topic=%s group=%s id=%s", msg.topic, msg.group, msg.id
        )
        deferred.set(True)  # not a failure: the circuit breaker must not count it
        await msg.nack(delay=self.busy_delay)


class _Undo(Exception):
    """Rolls back the transaction of a message that was not processed."""


def _sequence_of(msg: Message, header: str) -> tuple[str, int]:
    raw = msg.headers.get(header)
    if msg.key is None or raw is None:
        raise Reject(f"the sequence strategy needs a key and a {header!r} header")
    try:
        return msg.key, int(raw)
    except ValueError:
        raise Reject(f"header {header!r} is not an integer: {raw[:40]!r}") from None

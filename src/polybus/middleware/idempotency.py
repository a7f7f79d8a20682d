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
running too: the twin is deferred until the lease can have expired, that is nacked
with a delay of the lease's remaining time (as the store reports it) plus a random
``0..busy_delay`` and a small margin, capped at ``lease`` and at the backend's
``max_delay``. When it comes back the holder has either finished (the twin is a
duplicate and is acked), failed and released the lease, or died: its lease has then
expired and the twin runs. So a consumer that died holding a lease costs its message
one deferred delivery (two at most, when clocks disagree), never a trip to the
poison-pill limit; the deferral is not a failure for the circuit breaker, nor a
counted delivery for the poison guard. On a backend without delayed redelivery the
twin waits in process instead (holding its in-flight slot) and claims again.

A duplicate is acked without running the handler, never silently: each skip logs one
INFO line on ``polybus.middleware.idempotency`` with the topic, group, message id and
strategy; each deferral logs one INFO line with its delay.

``atomic=True`` (SQL stores, ``ProcessedIds`` only) runs the handler inside a store
transaction: the handler writes its effect through
:func:`polybus.stores.current_transaction`, and the effect and the marker commit
together or not at all; the marker's unique key is the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .. import headers as h
from .._events import emit
from .._message import Message
from .._worker import Handler
from ..errors import ConfigError, Reject
from ..stores.base import (
    Claim,
    Store,
    TransactionalStore,
    claim_reporting,
    reset_transaction,
    set_transaction,
)
from ._common import capabilities_of, note_deferral, processing_id, scope

__all__ = ["Idempotency", "ProcessedIds", "Sequences", "TimeWindow"]

log = logging.getLogger("polybus.middleware.idempotency")

_MARGIN = 0.02
"""Seconds added to a twin's deferral so that it comes back after the lease expired,
not at the instant it expires (the store's and the broker's clocks differ a little)."""


@dataclass(frozen=True, slots=True)
class ProcessedIds:
    """Deduplicate by message id; forget a processed id after ``ttl`` seconds if set."""

    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class Sequences:
    """Deduplicate by a monotonic sequence per entity (the message key) in ``header``.

    Meant for key-ordered groups (``ordering="key"``): in an unordered group a key's
    messages may be processed at once and out of order, so a later sequence number can
    be marked before an earlier one arrives, which is then dropped as stale."""

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
    longest handler run: a twin arriving after it runs too). A twin of a message in
    progress is deferred for the lease's remaining time plus up to ``busy_delay``
    seconds of random jitter, capped at ``lease`` (see the module docstring). With a
    store that cannot report the remaining time (no ``try_claim``) it waits the whole
    ``lease``. Sets ``provides_idempotency`` for ``delivery="effectively_once"``.
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
        if not busy_delay >= 0:
            raise ConfigError("busy_delay", f"must be >= 0, got {busy_delay!r}")
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
        self._rng = random.Random()
        self._warned: set[str] = set()

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
        store = self.store

        async def deduplicating(msg: Message) -> None:
            where = f"{kind}:{msg.topic}/{msg.group or ''}"
            key = identify(msg)
            if not await self._claim(msg, where, key):
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
        store = self.store

        async def in_sequence(msg: Message) -> None:
            entity, seq = _sequence_of(msg, strategy.header)
            where = scope(msg)
            stored = await store.sequence(f"seq:{where}", entity)
            if stored is not None and seq <= stored:
                self._skipped(msg, f" seq={seq} highest={stored}")
                return
            lease_key = f"{entity}#{seq}"
            if not await self._claim(msg, f"seqlease:{where}", lease_key):
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
        emit("duplicate_skipped", topic=msg.topic, group=msg.group)
        log.info(
            "duplicate skipped topic=%s group=%s id=%s strategy=%s%s",
            msg.topic,
            msg.group,
            msg.id,
            type(self.strategy).__name__,
            detail,
        )

    async def _claim(self, msg: Message, where: str, key: str) -> bool:
        """Take the lease on ``key``: True when this delivery holds it and runs. False
        when the message was settled here instead: a duplicate (left for the Worker to
        ack) or a twin deferred until the holder's lease can have expired."""
        while True:
            result = await claim_reporting(self.store, where, key, self.lease)
            if result.claim is Claim.CLAIMED:
                return True
            if result.claim is Claim.DONE:
                self._skipped(msg)
                return False
            delay = self._deferral(msg, result.remaining)
            if self._broker_can_wait(msg):
                log.info(
                    "twin in progress, deferred for %.3fs topic=%s group=%s id=%s",
                    delay,
                    msg.topic,
                    msg.group,
                    msg.id,
                )
                # not a failure: the breaker must not count it, nor the poison guard
                note_deferral()
                await msg.nack(delay=delay)
                return False
            log.info(
                "twin in progress, waiting %.3fs in process topic=%s group=%s id=%s",
                delay,
                msg.topic,
                msg.group,
                msg.id,
            )
            await asyncio.sleep(delay)

    def _deferral(self, msg: Message, remaining: float | None) -> float:
        """How long a twin waits: until the holder's lease can have expired."""
        if remaining is None:
            self._warn_once(
                "unknown",
                "%s cannot report a lease's remaining time (no try_claim): twins of a "
                "message in progress wait the whole lease=%gs",
                type(self.store).__name__,
                self.lease,
            )
            remaining = self.lease
        jitter = self._rng.uniform(0.0, self.busy_delay) if self.busy_delay else 0.0
        # capped at our lease: a longer lease taken by another worker's settings costs a
        # second deferral, never an unbounded wait
        delay = min(self.lease, remaining + _MARGIN + jitter)
        caps = capabilities_of(msg)
        if caps is not None and caps.max_delay is not None:
            delay = min(delay, caps.max_delay)
        return delay

    def _broker_can_wait(self, msg: Message) -> bool:
        """False on a backend without delayed redelivery, where a nack comes straight
        back and would burn the message's deliveries while the lease lasts."""
        caps = capabilities_of(msg)
        if caps is None or caps.delayed_redelivery:
            return True
        self._warn_once(
            "no-delay",
            "topic=%s group=%s: the backend has no delayed redelivery, so twins of a "
            "message in progress wait in process, keeping their in-flight slot",
            msg.topic,
            msg.group,
        )
        return False

    def _warn_once(self, what: str, text: str, *args: object) -> None:
        if what not in self._warned:
            self._warned.add(what)
            log.warning(text, *args)


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

"""The store protocol: the few durable operations the reliability middleware needs.

A store keeps three kinds of record, each in a caller-given ``scope`` (the middleware
uses ``TOPIC/GROUP`` plus a prefix per purpose) so groups never see each other's:

* claims: ``claim`` takes an in-progress lease on a key (or reports the key as already
  done, or as leased by someone else); ``complete`` marks it done (optionally expiring
  after ``ttl`` seconds); ``release`` drops the lease after a failure so the
  redelivery is not mistaken for a duplicate;
* sequences: the highest sequence number processed per entity;
* counters: delivery attempts, for backends without a native delivery count.

Two abilities beyond :class:`Store` are their own small protocols, so a store written
against the original protocol keeps working: :class:`ReportsRemainingLease` (``try_claim``
says how long a busy lease has left, so a twin can wait exactly that long) and
:class:`UncountingStore` (``decr`` takes back one count, so a deferral is not counted
as a delivery). Every store in this package has both; :func:`claim_reporting` falls
back to plain ``claim`` (remaining lease unknown) for a store without ``try_claim``.

Every method is a coroutine called from the event loop and is safe to call from many
tasks at once. Expiry uses the wall clock of the calling process, so workers sharing
a store need roughly synchronised clocks (seconds, not minutes, of skew).
SQL stores also implement :class:`TransactionalStore`: the idempotency middleware can
then write its processed marker in the same transaction as the handler's effect.
"""

from __future__ import annotations

import contextvars
import enum
import re
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError

__all__ = [
    "Claim",
    "ClaimResult",
    "ReportsRemainingLease",
    "Store",
    "Transaction",
    "TransactionalStore",
    "UncountingStore",
    "claim_reporting",
    "current_transaction",
]


class Claim(enum.Enum):
    """The outcome of :meth:`Store.claim`."""

    CLAIMED = "claimed"
    """The caller now holds the lease and should process."""
    DONE = "done"
    """Already processed: a duplicate."""
    BUSY = "busy"
    """Another delivery holds an unexpired lease: it is being processed right now."""


@runtime_checkable
class Store(Protocol):
    """Durable bookkeeping for idempotency and poison-pill counting."""

    async def claim(self, scope: str, key: str, lease: float) -> Claim:
        """Take a lease of ``lease`` seconds on ``key`` unless it is done or leased."""

    async def complete(self, scope: str, key: str, ttl: float | None) -> None:
        """Mark ``key`` done (forgotten after ``ttl`` seconds if given); ends the lease."""

    async def release(self, scope: str, key: str) -> None:
        """Drop the lease on ``key`` without marking it done."""

    async def sequence(self, scope: str, entity: str) -> int | None:
        """The highest sequence recorded for ``entity``, or None."""

    async def advance(self, scope: str, entity: str, value: int) -> None:
        """Record ``value`` for ``entity`` if it is higher than the stored one."""

    async def incr(self, scope: str, key: str, ttl: float) -> int:
        """Add one to the counter ``key`` (created at 0, forgotten ``ttl`` seconds after
        its last increment) and return the new value."""

    async def reset(self, scope: str, key: str) -> None:
        """Forget the counter ``key``."""

    async def close(self) -> None:
        """Release connections. Idempotent."""


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """The outcome of :meth:`ReportsRemainingLease.try_claim`."""

    claim: Claim
    remaining: float | None = None
    """With :attr:`Claim.BUSY`: seconds until the holder's lease expires (0 if it is
    expiring right now); None for the other outcomes, or when the store cannot tell."""


@runtime_checkable
class ReportsRemainingLease(Protocol):
    """A store that says, when a claim fails, how long the holder's lease has left."""

    async def try_claim(self, scope: str, key: str, lease: float) -> ClaimResult:
        """:meth:`Store.claim`, plus the remaining lease when the key is busy. The
        outcome and the remaining time come from one look at the record."""


@runtime_checkable
class UncountingStore(Protocol):
    """A store whose counters can be taken back by one."""

    async def decr(self, scope: str, key: str) -> int:
        """Subtract one from the counter ``key`` (never below 0, expiry unchanged) and
        return the new value; 0 when the counter is absent or expired."""


async def claim_reporting(store: Store, scope: str, key: str, lease: float) -> ClaimResult:
    """Claim through ``try_claim`` where ``store`` has it, else through ``claim`` with
    the remaining lease unknown (None)."""
    if isinstance(store, ReportsRemainingLease):
        return await store.try_claim(scope, key, lease)
    return ClaimResult(await store.claim(scope, key, lease))


class Transaction(Protocol):
    """A database transaction the handler's effect and the processed marker share."""

    raw: Any
    """The native connection (``sqlite3.Connection`` used from the store's thread, or
    ``psycopg.AsyncConnection``), as an escape hatch."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement in the transaction; return its rows (empty if none)."""


@runtime_checkable
class TransactionalStore(Store, Protocol):
    """A store whose marker can commit together with the caller's own writes."""

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """A new transaction: committed on normal exit, rolled back on an exception."""

    async def mark(self, tx: Transaction, scope: str, key: str, ttl: float | None) -> bool:
        """Insert the done marker inside ``tx``; False if ``key`` is already done.
        A concurrent transaction marking the same key waits for this one to end."""


_current: contextvars.ContextVar[Transaction] = contextvars.ContextVar("polybus_transaction")


def current_transaction() -> Transaction:
    """The transaction of the message being handled, inside a handler run by
    ``Idempotency(store, atomic=True)``. Write the handler's effect through it so the
    effect and the processed marker commit or roll back together."""
    try:
        return _current.get()
    except LookupError:
        raise LookupError(
            "no polybus transaction: current_transaction() works inside a handler run by "
            "Idempotency(store, atomic=True) with a SQL store"
        ) from None


def set_transaction(tx: Transaction) -> contextvars.Token[Transaction]:
    return _current.set(tx)


def reset_transaction(token: contextvars.Token[Transaction]) -> None:
    _current.reset(token)


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_identifier(field: str, value: str) -> str:
    """A table name safe to format into SQL (it cannot be a bound parameter)."""
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ConfigError(field, f"{value!r} is not a plain SQL identifier")
    return value

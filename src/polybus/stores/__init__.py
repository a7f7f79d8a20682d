"""Stores for the reliability middleware: processed ids, sequences, attempt counters.

* :class:`MemoryStore`: in process, fastest, forgets on exit;
* :class:`SQLiteStore`: one local file, durable, the embedded default;
* :class:`RedisStore`: shared, fast, not transactional (``redis`` extra);
* :class:`PostgresStore`: shared, durable, transactional (``postgres`` extra).

The SQL stores can join the handler's transaction (see :func:`current_transaction`).
"""

from __future__ import annotations

from .base import (
    Claim,
    ClaimResult,
    ReportsRemainingLease,
    Store,
    Transaction,
    TransactionalStore,
    UncountingStore,
    current_transaction,
)
from .memory import MemoryStore
from .postgres import PostgresStore
from .redis import RedisStore
from .sqlite import SQLiteStore

__all__ = [
    "Claim",
    "ClaimResult",
    "MemoryStore",
    "PostgresStore",
    "RedisStore",
    "ReportsRemainingLease",
    "SQLiteStore",
    "Store",
    "Transaction",
    "TransactionalStore",
    "UncountingStore",
    "current_transaction",
]

"""SQLiteStore: the embedded durable store (one file, no server), the default choice."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from os import PathLike
from typing import Any

from ._sql import SQLStore, statements
from .base import Transaction, check_identifier

__all__ = ["SQLiteStore"]


class _Connection:
    """One sqlite3 connection owned by one thread (sqlite3 objects stay in the thread
    that made them); every call is handed to that thread, off the event loop."""

    def __init__(self, path: str, name: str) -> None:
        self._path = path
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"polybus-sqlite-{name}")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            # autocommit (isolation_level None): transactions are explicit BEGINs
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=60.0)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn = conn
        return self._conn

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        cursor = self._open().execute(sql, tuple(params))
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._execute, sql, params)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=False)


class _SQLiteTransaction:
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.raw = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._conn.execute(sql, params)


class SQLiteStore(SQLStore):
    """A :class:`~polybus.stores.TransactionalStore` in a SQLite file (WAL mode).

    Durable across crashes and shared by processes on one machine. Two connections,
    each on its own thread: one for single statements, one for the transactions of
    ``Idempotency(store, atomic=True)``. SQLite has one writer at a time, so atomic
    handlers of one store run one at a time (a process-wide lock) and other processes
    wait up to 60 s for the write lock. The connection opens on first use.
    """

    def __init__(self, path: str | PathLike[str], *, table: str = "polybus_store") -> None:
        self.path = str(path)
        self.table = check_identifier("table", table)
        self._sql = statements(self.table, placeholder="?", real="REAL", greatest="MAX")
        self._auto = _Connection(self.path, "auto")
        self._tx = _Connection(self.path, "tx")
        self._tx_lock = asyncio.Lock()
        self._ready = False
        self._ready_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path!r} table={self.table}>"

    async def _ensure(self) -> None:
        async with self._ready_lock:
            if not self._ready:
                await self._auto.execute(self._sql.create)
                self._ready = True

    async def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if not self._ready:
            await self._ensure()
        return await self._auto.execute(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction (``BEGIN IMMEDIATE``): committed on normal exit, rolled
        back on an exception. ``tx.raw`` is the store's connection wrapper."""
        if not self._ready:
            await self._ensure()
        async with self._tx_lock:
            await self._tx.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteTransaction(self._tx)
            except BaseException:
                await asyncio.shield(self._tx.execute("ROLLBACK"))
                raise
            await self._tx.execute("COMMIT")

    async def close(self) -> None:
        await self._auto.close()
        await self._tx.close()

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

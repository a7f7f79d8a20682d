"""PostgresStore: a shared durable store on PostgreSQL (psycopg 3, async)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ..config import redact as _redact_url
from ..errors import BrokerUnavailable, ConfigError
from ._sql import SQLStore, statements
from .base import Transaction, check_identifier

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresStore"]

_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def redact(dsn: str) -> str:
    """``dsn`` (URL or ``key=value`` string) with its password replaced by ``***``."""
    if "://" in dsn:
        return _redact_url(dsn)
    return _PASSWORD.sub(r"\1***", dsn)


class _PostgresTransaction:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.raw = conn

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self.raw.cursor() as cur:
            await cur.execute(sql, tuple(params))
            return await cur.fetchall() if cur.description is not None else []


class PostgresStore(SQLStore):
    """A :class:`~polybus.stores.TransactionalStore` in one PostgreSQL table.

    ``dsn`` is a libpq connection string or URL (its password never appears in reprs
    or errors). Up to ``max_connections`` connections are opened on demand and reused.
    In ``Idempotency(store, atomic=True)`` the handler's writes go through
    :func:`~polybus.stores.current_transaction` (``tx.raw`` is the
    ``psycopg.AsyncConnection``); the marker's unique key makes a concurrent delivery
    of the same id wait for the first transaction, then see it as done.
    Needs the ``postgres`` extra (psycopg 3).
    """

    def __init__(self, dsn: str, *, table: str = "polybus_store", max_connections: int = 8) -> None:
        if max_connections < 1:
            raise ConfigError("max_connections", f"must be >= 1, got {max_connections!r}")
        self._dsn = dsn
        self.table = check_identifier("table", table)
        self._sql = statements(
            self.table, placeholder="%s", real="DOUBLE PRECISION", greatest="GREATEST"
        )
        self._max = max_connections
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._opened = 0
        self._available: asyncio.Condition | None = None
        self._ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<PostgresStore {redact(self._dsn)} table={self.table}>"

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        try:
            return await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            raise BrokerUnavailable(
                f"cannot connect to PostgreSQL at {redact(self._dsn)}: {type(exc).__name__}"
            ) from None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._closed:
            raise RuntimeError("PostgresStore is closed")
        if self._available is None:
            self._available = asyncio.Condition()
        available = self._available
        async with available:
            while not self._idle and self._opened >= self._max:
                await available.wait()
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                self._opened += 1
        if conn is None:
            try:
                conn = await self._connect()
            except BaseException:
                async with available:
                    self._opened -= 1
                    available.notify()
                raise
        try:
            if not self._ready:
                await conn.execute(self._sql.create)
                self._ready = True
            yield conn
        finally:
            # 0 is IDLE: anything else (a failed or unfinished transaction) is not reused
            broken = conn.closed or conn.info.transaction_status != 0
            async with available:
                if broken or self._closed:
                    self._opened -= 1
                    await conn.close()
                else:
                    self._idle.append(conn)
                available.notify()

    async def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._connection() as conn:
            return await _PostgresTransaction(conn).execute(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A transaction on a pooled connection: committed on normal exit, rolled back
        on an exception."""
        async with self._connection() as conn, conn.transaction():
            yield _PostgresTransaction(conn)

    async def drop(self) -> None:
        """Drop the table (tests and teardown)."""
        async with self._connection() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {self.table}")
            self._ready = False

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._opened -= 1
            await conn.close()

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

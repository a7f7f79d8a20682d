"""PostgresStore: a shared durable store on PostgreSQL (psycopg 3 + psycopg_pool)."""

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
    from psycopg_pool import AsyncConnectionPool

__all__ = ["PostgresStore"]

_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
_EXTRA = "PostgresStore needs the postgres extra: pip install 'polybus[postgres]'"


def _password_of(dsn: str) -> str | None:
    """The password in ``dsn``, to blank it out of driver messages. Fails at once when
    the driver is missing, or when libpq cannot parse ``dsn`` (its own error would
    quote the string whole, password included)."""
    try:
        import psycopg_pool  # noqa: F401  (checked here: needed at first use)
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError as exc:
        raise ImportError(_EXTRA) from exc
    try:
        password = conninfo_to_dict(dsn).get("password")
    except ProgrammingError:
        raise ConfigError("dsn", "libpq cannot parse it as a connection string or URL") from None
    return str(password) if password else None


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
    or errors). Connections come from a ``psycopg_pool.AsyncConnectionPool`` of at
    most ``max_connections`` autocommit connections, opened on first use; a caller
    waits up to ``timeout`` seconds for a free one, then gets
    :class:`~polybus.errors.BrokerUnavailable`. The first use also connects once
    directly, to create the table and to fail fast, with the reason, when the server
    cannot be reached or refuses the login.

    In ``Idempotency(store, atomic=True)`` each message's transaction holds its own
    pooled connection; the handler's writes go through
    :func:`~polybus.stores.current_transaction` (``tx.raw`` is the
    ``psycopg.AsyncConnection``), and the marker's unique key makes a concurrent
    delivery of the same id wait for the first transaction, then see it as done.
    Needs the ``postgres`` extra (psycopg 3 and psycopg-pool).
    """

    def __init__(
        self,
        dsn: str,
        *,
        table: str = "polybus_store",
        max_connections: int = 8,
        timeout: float = 30.0,
    ) -> None:
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError(
                "max_connections", f"must be an integer >= 1, got {max_connections!r}"
            )
        if not timeout > 0:
            raise ConfigError("timeout", f"must be > 0, got {timeout!r}")
        self._dsn = dsn
        self._password = _password_of(dsn)
        self.table = check_identifier("table", table)
        self._sql = statements(
            self.table, placeholder="%s", real="DOUBLE PRECISION", greatest="GREATEST"
        )
        self.max_connections = max_connections
        self.timeout = timeout
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._opening: asyncio.Lock | None = None
        self._ready = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<PostgresStore {redact(self._dsn)} table={self.table}>"

    async def _open(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        """The pool, opened (and the table created) by the first caller; others wait."""
        if self._opening is None:
            self._opening = asyncio.Lock()  # made here: it must belong to the running loop
        async with self._opening:
            if self._closed:
                raise RuntimeError("PostgresStore is closed")
            if self._pool is not None:
                return self._pool
            import psycopg
            from psycopg_pool import AsyncConnectionPool

            try:
                # one direct connection before the pool: the pool retries a failed
                # connect in the background until ``timeout``, so an unreachable server
                # or a bad password would surface only as a late, reasonless timeout
                probe = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
            except psycopg.OperationalError as exc:
                # ``from None``: the original error must not travel with the password
                raise BrokerUnavailable(
                    f"cannot connect to PostgreSQL at {redact(self._dsn)}: {self._reason(exc)}"
                ) from None
            try:
                await probe.execute(self._sql.create)
                self._ready = True
            finally:
                await probe.close()
            pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
                self._dsn,
                kwargs={"autocommit": True},
                min_size=1,
                max_size=self.max_connections,
                timeout=self.timeout,
                name=f"polybus-{self.table}",
                open=False,
            )
            await pool.open()
            self._pool = pool
            return pool

    def _reason(self, exc: BaseException) -> str:
        """The first line of a driver error, with the password blanked out."""
        lines = str(exc).strip().splitlines()
        text = lines[0] if lines else type(exc).__name__
        return text.replace(self._password, "***") if self._password else text

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        pool = self._pool if self._pool is not None and not self._closed else await self._open()
        import psycopg
        from psycopg_pool import PoolClosed, PoolTimeout

        try:
            conn = await pool.getconn()
        except PoolTimeout:
            raise BrokerUnavailable(
                f"no PostgreSQL connection free within {self.timeout}s at {redact(self._dsn)} "
                f"(max_connections={self.max_connections})"
            ) from None
        except PoolClosed:
            raise RuntimeError("PostgresStore is closed") from None
        try:
            if not self._ready:  # after drop(): the table is made again on demand
                await conn.execute(self._sql.create)
                self._ready = True
            yield conn
        except psycopg.OperationalError as exc:
            if not conn.closed:
                raise
            # the server went away (restart, failover, idle kill): say so in polybus
            # terms, which callers retry; the pool replaces the dead connection
            raise BrokerUnavailable(
                f"lost the PostgreSQL connection at {redact(self._dsn)}: {self._reason(exc)}"
            ) from exc
        finally:
            # the pool rolls back an unfinished transaction and replaces a broken
            # connection, so a failed transaction never leaks into the next caller
            await pool.putconn(conn)

    async def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async with self._connection() as conn:
            return await _PostgresTransaction(conn).execute(sql, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A transaction on a pooled connection, held until it ends: committed on
        normal exit, rolled back on an exception."""
        async with self._connection() as conn, conn.transaction():
            yield _PostgresTransaction(conn)

    async def drop(self) -> None:
        """Drop the table (tests and teardown)."""
        async with self._connection() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {self.table}")
            self._ready = False

    async def close(self) -> None:
        """Close the pool's connections. Idempotent; the store cannot be reopened."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> PostgresStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

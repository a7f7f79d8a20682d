"""The SQL both SQL stores run: one table, portable statements, two dialects.

One row per record: ``state`` is ``lease`` or ``done`` for claims, ``seq`` for
sequences and ``count`` for counters; ``expires_at`` is Unix time (seconds) or NULL for
never. An expired row counts as absent: the upserts below overwrite it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .base import Claim, ClaimResult, Transaction


@dataclass(frozen=True, slots=True)
class Statements:
    create: str
    claim: str
    state: str
    complete: str
    release: str
    sequence: str
    advance: str
    incr: str
    decr: str
    reset: str
    mark: str


def statements(table: str, *, placeholder: str, real: str, greatest: str) -> Statements:
    """The statements for ``table`` in one dialect (``placeholder`` ``?`` or ``%s``,
    the float type name, and the two-argument maximum function)."""
    p = placeholder
    t = table
    return Statements(
        create=(
            f"CREATE TABLE IF NOT EXISTS {t} ("
            " scope TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,"
            f" value BIGINT NOT NULL DEFAULT 0, expires_at {real},"
            " PRIMARY KEY (scope, key))"
        ),
        # a lease is taken when the row is absent or expired
        claim=(
            f"INSERT INTO {t} (scope, key, state, value, expires_at)"
            f" VALUES ({p}, {p}, 'lease', 0, {p})"
            " ON CONFLICT (scope, key) DO UPDATE"
            " SET state = 'lease', value = 0, expires_at = excluded.expires_at"
            f" WHERE {t}.expires_at IS NOT NULL AND {t}.expires_at < {p}"
            " RETURNING state"
        ),
        state=f"SELECT state, expires_at FROM {t} WHERE scope = {p} AND key = {p}",
        complete=(
            f"INSERT INTO {t} (scope, key, state, value, expires_at)"
            f" VALUES ({p}, {p}, 'done', 0, {p})"
            " ON CONFLICT (scope, key) DO UPDATE"
            " SET state = 'done', expires_at = excluded.expires_at"
        ),
        release=f"DELETE FROM {t} WHERE scope = {p} AND key = {p} AND state = 'lease'",
        sequence=f"SELECT value FROM {t} WHERE scope = {p} AND key = {p} AND state = 'seq'",
        advance=(
            f"INSERT INTO {t} (scope, key, state, value, expires_at)"
            f" VALUES ({p}, {p}, 'seq', {p}, NULL)"
            " ON CONFLICT (scope, key) DO UPDATE"
            f" SET value = {greatest}({t}.value, excluded.value)"
        ),
        incr=(
            f"INSERT INTO {t} (scope, key, state, value, expires_at)"
            f" VALUES ({p}, {p}, 'count', 1, {p})"
            " ON CONFLICT (scope, key) DO UPDATE"
            f" SET value = CASE WHEN {t}.expires_at < {p} THEN 1 ELSE {t}.value + 1 END,"
            " expires_at = excluded.expires_at"
            " RETURNING value"
        ),
        # an expired counter counts as absent, as in ``incr``: nothing to take back
        decr=(
            f"UPDATE {t} SET value = value - 1"
            f" WHERE scope = {p} AND key = {p} AND state = 'count' AND value > 0"
            f" AND expires_at >= {p}"
            " RETURNING value"
        ),
        reset=f"DELETE FROM {t} WHERE scope = {p} AND key = {p}",
        # inside the caller's transaction: the unique key makes a concurrent twin wait
        mark=(
            f"INSERT INTO {t} (scope, key, state, value, expires_at)"
            f" VALUES ({p}, {p}, 'done', 0, {p})"
            " ON CONFLICT (scope, key) DO UPDATE"
            " SET state = 'done', expires_at = excluded.expires_at"
            f" WHERE {t}.expires_at IS NOT NULL AND {t}.expires_at < {p}"
            " RETURNING state"
        ),
    )


def expiry(now: float, seconds: float | None) -> float | None:
    return None if seconds is None else now + seconds


class SQLStore:
    """The :class:`~polybus.stores.Store` methods over one ``_run`` primitive that
    executes a statement in its own autocommit transaction. Subclasses bring the
    connection and the dialect; see :class:`~polybus.stores.SQLiteStore` and
    :class:`~polybus.stores.PostgresStore`."""

    _sql: Statements

    async def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    async def claim(self, scope: str, key: str, lease: float) -> Claim:
        return (await self.try_claim(scope, key, lease)).claim

    async def try_claim(self, scope: str, key: str, lease: float) -> ClaimResult:
        for _ in range(5):  # a row deleted between the two statements: try again
            moment = time.time()
            if await self._run(self._sql.claim, (scope, key, moment + lease, moment)):
                return ClaimResult(Claim.CLAIMED)
            rows = await self._run(self._sql.state, (scope, key))
            if rows:
                state, expires_at = rows[0]
                if state == "done":
                    return ClaimResult(Claim.DONE)
                left = None if expires_at is None else max(0.0, expires_at - time.time())
                return ClaimResult(Claim.BUSY, left)
        # the row kept vanishing: someone is claiming and releasing it right now
        return ClaimResult(Claim.BUSY, 0.0)

    async def complete(self, scope: str, key: str, ttl: float | None) -> None:
        await self._run(self._sql.complete, (scope, key, expiry(time.time(), ttl)))

    async def release(self, scope: str, key: str) -> None:
        await self._run(self._sql.release, (scope, key))

    async def sequence(self, scope: str, entity: str) -> int | None:
        rows = await self._run(self._sql.sequence, (scope, entity))
        return int(rows[0][0]) if rows else None

    async def advance(self, scope: str, entity: str, value: int) -> None:
        await self._run(self._sql.advance, (scope, entity, value))

    async def incr(self, scope: str, key: str, ttl: float) -> int:
        moment = time.time()
        rows = await self._run(self._sql.incr, (scope, key, moment + ttl, moment))
        return int(rows[0][0])

    async def decr(self, scope: str, key: str) -> int:
        rows = await self._run(self._sql.decr, (scope, key, time.time()))
        return int(rows[0][0]) if rows else 0

    async def reset(self, scope: str, key: str) -> None:
        await self._run(self._sql.reset, (scope, key))

    async def mark(self, tx: Transaction, scope: str, key: str, ttl: float | None) -> bool:
        moment = time.time()
        rows = await tx.execute(self._sql.mark, (scope, key, expiry(moment, ttl), moment))
        return bool(rows)

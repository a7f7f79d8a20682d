"""MemoryStore: the process-local store. Fast; forgets everything when the process ends."""

from __future__ import annotations

import time

from .base import Claim, ClaimResult

__all__ = ["MemoryStore"]

_DONE = -1.0  # an expiry sentinel: done without expiry


class MemoryStore:
    """A :class:`~polybus.stores.Store` in dictionaries.

    Deduplicates only within one process, and a poison-pill count kept here does not
    survive the crash it is meant to catch: use :class:`~polybus.stores.SQLiteStore`
    (or Redis, Postgres) where that matters. Safe for many tasks of one event loop
    (no method awaits, so each is atomic).
    """

    def __init__(self) -> None:
        # (scope, key) -> (is_done, expires_at or None); monotonic time
        self._claims: dict[tuple[str, str], tuple[bool, float | None]] = {}
        self._sequences: dict[tuple[str, str], int] = {}
        self._counters: dict[tuple[str, str], tuple[int, float]] = {}

    def __repr__(self) -> str:
        return f"<MemoryStore claims={len(self._claims)}>"

    async def claim(self, scope: str, key: str, lease: float) -> Claim:
        return (await self.try_claim(scope, key, lease)).claim

    async def try_claim(self, scope: str, key: str, lease: float) -> ClaimResult:
        k = (scope, key)
        found = self._claims.get(k)
        moment = time.monotonic()
        if found is not None:
            done, expires = found
            if expires is None or expires > moment:
                if done:
                    return ClaimResult(Claim.DONE)
                # a lease always has an expiry; ``or moment`` only satisfies the type
                return ClaimResult(Claim.BUSY, (expires or moment) - moment)
        self._claims[k] = (False, moment + lease)
        return ClaimResult(Claim.CLAIMED)

    async def complete(self, scope: str, key: str, ttl: float | None) -> None:
        self._claims[(scope, key)] = (True, None if ttl is None else time.monotonic() + ttl)

    async def release(self, scope: str, key: str) -> None:
        k = (scope, key)
        found = self._claims.get(k)
        if found is not None and not found[0]:
            del self._claims[k]

    async def sequence(self, scope: str, entity: str) -> int | None:
        return self._sequences.get((scope, entity))

    async def advance(self, scope: str, entity: str, value: int) -> None:
        k = (scope, entity)
        current = self._sequences.get(k)
        if current is None or value > current:
            self._sequences[k] = value

    async def incr(self, scope: str, key: str, ttl: float) -> int:
        k = (scope, key)
        moment = time.monotonic()
        found = self._counters.get(k)
        value = found[0] + 1 if found is not None and found[1] > moment else 1
        self._counters[k] = (value, moment + ttl)
        return value

    async def decr(self, scope: str, key: str) -> int:
        k = (scope, key)
        found = self._counters.get(k)
        if found is None or found[1] <= time.monotonic():
            return 0
        value = max(0, found[0] - 1)
        self._counters[k] = (value, found[1])
        return value

    async def reset(self, scope: str, key: str) -> None:
        self._counters.pop((scope, key), None)

    def purge(self) -> int:
        """Drop expired records; return how many. Call it now and then in long runs."""
        moment = time.monotonic()
        stale = [k for k, (_, exp) in self._claims.items() if exp is not None and exp <= moment]
        for k in stale:
            del self._claims[k]
        counters = [k for k, (_, exp) in self._counters.items() if exp <= moment]
        for k in counters:
            del self._counters[k]
        return len(stale) + len(counters)

    async def close(self) -> None:
        return None

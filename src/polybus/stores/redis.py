"""RedisStore: a shared store on Redis (redis-py asyncio). Fast; not transactional."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..config import redact
from .base import Claim, ClaimResult

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStore"]

# drop a lease only if it is still a lease (never a done marker written meanwhile)
_RELEASE = (
    "if redis.call('GET', KEYS[1]) == 'lease' then return redis.call('DEL', KEYS[1]) end return 0"
)
# keep the highest sequence
_ADVANCE = (
    "local c = redis.call('GET', KEYS[1]) "
    "if (not c) or tonumber(ARGV[1]) > tonumber(c) then redis.call('SET', KEYS[1], ARGV[1]) end "
    "return 0"
)
# take one count back, never below zero; DECR keeps the key's expiry
_DECR = (
    "local c = tonumber(redis.call('GET', KEYS[1])) "
    "if (not c) or c <= 0 then return 0 end "
    "return redis.call('DECR', KEYS[1])"
)


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _bounded(method: F) -> F:
    """Bound a store call by the store's ``timeout`` (a cancellation always wins)."""

    @functools.wraps(method)
    async def bounded(self: RedisStore, *args: Any, **kwargs: Any) -> Any:
        async with asyncio.timeout(self.timeout):
            return await method(self, *args, **kwargs)

    return bounded  # type: ignore[return-value]


class RedisStore:
    """A :class:`~polybus.stores.Store` in Redis keys ``PREFIX + scope + ':' + key``.

    Leases are ``SET NX PX`` keys, so an expired lease frees itself; done markers with
    a ``ttl`` expire through Redis. Durability is Redis's (AOF/RDB settings); it cannot
    join a database transaction, so ``Idempotency(atomic=True)`` refuses it.
    ``url`` is a ``redis://`` URL; its password never appears in reprs or errors.
    Needs the ``redis`` extra.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "polybus:",
        timeout: float = 10.0,
    ) -> None:
        self._url = url
        self.prefix = prefix
        self.timeout = timeout
        """Seconds one store call may take (then TimeoutError)."""
        self._client: Redis | None = None

    def __repr__(self) -> str:
        return f"<RedisStore {redact(self._url)} prefix={self.prefix!r}>"

    def _redis(self) -> Redis:
        if self._client is None:
            from redis.asyncio import Redis

            # no socket timeout: redis-py bounds socket writes with asyncio.wait_for then,
            # which on Python 3.11 can swallow a cancellation; every call of this store
            # is bounded by ``timeout`` instead (see _bounded)
            self._client = Redis.from_url(
                self._url,
                decode_responses=True,
                socket_timeout=None,
                socket_connect_timeout=self.timeout,
            )
        return self._client

    def _key(self, kind: str, scope: str, key: str) -> str:
        return f"{self.prefix}{kind}:{scope}:{key}"

    async def claim(self, scope: str, key: str, lease: float) -> Claim:
        return (await self.try_claim(scope, key, lease)).claim

    @_bounded
    async def try_claim(self, scope: str, key: str, lease: float) -> ClaimResult:
        r = self._redis()
        k = self._key("claim", scope, key)
        for _ in range(5):  # the key expired between the two commands: try again
            if await r.set(k, "lease", nx=True, px=_ms(lease)):
                return ClaimResult(Claim.CLAIMED)
            # one MULTI: the state and its time to live belong to the same record
            async with r.pipeline(transaction=True) as pipe:
                pipe.get(k)
                pipe.pttl(k)
                state, pttl = await pipe.execute()
            if state is None:
                continue
            if state == "done":
                return ClaimResult(Claim.DONE)
            # PTTL is -1 for a key without expiry, which a lease never is
            return ClaimResult(Claim.BUSY, pttl / 1000 if pttl >= 0 else None)
        # the key kept vanishing: someone is claiming and releasing it right now
        return ClaimResult(Claim.BUSY, 0.0)

    @_bounded
    async def complete(self, scope: str, key: str, ttl: float | None) -> None:
        px = None if ttl is None else _ms(ttl)
        await self._redis().set(self._key("claim", scope, key), "done", px=px)

    @_bounded
    async def release(self, scope: str, key: str) -> None:
        await _eval(self._redis(), _RELEASE, self._key("claim", scope, key))

    @_bounded
    async def sequence(self, scope: str, entity: str) -> int | None:
        value = await self._redis().get(self._key("seq", scope, entity))
        return None if value is None else int(value)

    @_bounded
    async def advance(self, scope: str, entity: str, value: int) -> None:
        await _eval(self._redis(), _ADVANCE, self._key("seq", scope, entity), str(value))

    @_bounded
    async def incr(self, scope: str, key: str, ttl: float) -> int:
        k = self._key("count", scope, key)
        async with self._redis().pipeline(transaction=True) as pipe:
            pipe.incr(k)
            pipe.pexpire(k, _ms(ttl))
            value, _ = await pipe.execute()
        return int(value)

    @_bounded
    async def decr(self, scope: str, key: str) -> int:
        return int(await _eval(self._redis(), _DECR, self._key("count", scope, key)))

    @_bounded
    async def reset(self, scope: str, key: str) -> None:
        await self._redis().delete(self._key("count", scope, key))

    @_bounded
    async def delete_all(self) -> int:
        """Delete every key under this store's prefix (tests and teardown)."""
        r = self._redis()
        keys = [k async for k in r.scan_iter(match=f"{self.prefix}*")]
        return int(await r.delete(*keys)) if keys else 0

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def __aenter__(self) -> RedisStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


async def _eval(r: Redis, script: str, key: str, *args: str) -> Any:
    return await r.eval(script, 1, key, *args)

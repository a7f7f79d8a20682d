"""The raw redis-py side of ``polybus bench redis`` (see :mod:`polybus.bench`).

Same guarantees as the SDK: a stream with a consumer group created at its end before
publishing; every XADD answered by the server (pipelined: one round trip per batch);
XREADGROUP for up to 256 entries, then one XACK per entry, awaited, as the SDK's ``each``
loop acks. The persistence is the server's, the same for both sides.
"""

from __future__ import annotations

import uuid
from typing import Any

from redis.asyncio import Redis

from polybus.bench import RawBaseline

from ._settings import client, parse

__all__ = ["RawRedis", "raw_baseline"]

FETCH_BATCH = 256
"""Entries per XREADGROUP, the SDK's default subscription window in the benchmark."""


class RawRedis:
    """:class:`~polybus.bench.RawBaseline` with plain redis-py stream commands."""

    description = "redis-py pipelined XADD / XREADGROUP + XACK per entry"

    def __init__(self) -> None:
        self._redis: Redis | None = None
        self._key = ""
        self._group = ""

    async def setup(self, url: str, topic: str, group: str) -> None:
        self._redis = client(parse(url, {}))
        self._key, self._group = f"raw-{uuid.uuid4().hex[:8]}", group
        await self._redis.xgroup_create(self._key, group, id="$", mkstream=True)

    def _ready(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("RawRedis used before setup()")
        return self._redis

    async def publish(self, bodies: list[bytes]) -> None:
        pipe = self._ready().pipeline(transaction=False)
        for body in bodies:
            pipe.xadd(self._key, {"body": body})
        await pipe.execute()

    async def _read(self, count: int) -> list[bytes]:
        reply: Any = await self._ready().xreadgroup(
            self._group, "raw", {self._key: ">"}, count=count, block=30_000
        )
        return [entry_id for _, entries in reply for entry_id, _ in entries]

    async def consume(self, count: int) -> None:
        redis = self._ready()
        left = count
        while left > 0:
            for entry_id in await self._read(min(FETCH_BATCH, left)):
                await redis.xack(self._key, self._group, entry_id)
                left -= 1

    async def round_trip(self, body: bytes) -> None:
        redis = self._ready()
        await redis.xadd(self._key, {"body": body})
        (entry_id,) = await self._read(1)
        await redis.xack(self._key, self._group, entry_id)

    async def teardown(self) -> None:
        if self._redis is not None:
            try:
                await self._redis.delete(self._key)
            finally:
                await self._redis.aclose()
        self._redis = None


def raw_baseline() -> RawBaseline:
    """The factory ``polybus bench redis`` loads."""
    return RawRedis()

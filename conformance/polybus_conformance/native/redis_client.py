"""Redis Streams through redis-py, with no polybus code: XADD with a ``body`` field and
the headers as fields; XREAD of new entries."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from . import NativeMessage

PREFIX = "polybus:"
"""The adapter's default ``key_prefix``: topic T is the stream at key ``polybus:T``."""


class Client:
    def __init__(self, url: str) -> None:
        self.redis: Any = Redis.from_url(url.split("?")[0])

    async def publish(
        self, topic: str, body: bytes, headers: dict[str, str], key: str | None
    ) -> None:
        # a stream entry has no key: a plain producer sends body and headers only
        fields: dict[Any, Any] = {"body": body, **headers}
        await self.redis.xadd(PREFIX + topic, fields)

    async def reader(self, topic: str) -> _Reader:
        # XREAD from the entry id the stream ends with now: new entries only
        info = await self.redis.xinfo_stream(PREFIX + topic) if await self._exists(topic) else {}
        last = info.get("last-generated-id", b"0-0")
        return _Reader(self.redis, PREFIX + topic, last)

    async def _exists(self, topic: str) -> bool:
        return bool(await self.redis.exists(PREFIX + topic))

    async def close(self) -> None:
        await self.redis.aclose()


class _Reader:
    def __init__(self, redis: Any, key: str, last: Any) -> None:
        self.redis = redis
        self.key = key
        self.last = last

    async def read(self, count: int, timeout: float) -> list[NativeMessage]:  # noqa: ASYNC109
        out: list[NativeMessage] = []
        while len(out) < count:
            reply = await self.redis.xread(
                {self.key: self.last}, count=count, block=int(timeout * 1000)
            )
            if not reply:
                break
            for entry_id, fields in reply[0][1]:
                self.last = entry_id
                decoded = {k.decode(): v for k, v in fields.items()}
                body = decoded.pop("body", b"")
                headers = {k: v.decode() for k, v in decoded.items()}
                out.append(NativeMessage(body, headers, None))
        return out

    async def close(self) -> None:
        return None

"""NATS JetStream through nats-py, with no polybus code."""

from __future__ import annotations

from typing import Any

import nats
from nats.js.api import DeliverPolicy

from . import NativeMessage


class Client:
    def __init__(self, url: str) -> None:
        self.url = url.split("?")[0]
        self.nc: Any = None

    async def _js(self) -> Any:
        if self.nc is None:
            self.nc = await nats.connect(self.url)
        return self.nc.jetstream()

    async def publish(
        self, topic: str, body: bytes, headers: dict[str, str], key: str | None
    ) -> None:
        js = await self._js()
        await js.publish(f"polybus.{topic}", body, headers=dict(headers) or None)

    async def reader(self, topic: str) -> _Reader:
        js = await self._js()
        # an ephemeral push consumer of the topic's stream: new messages only
        sub = await js.subscribe(
            f"polybus.{topic}", stream=f"polybus-{topic}", deliver_policy=DeliverPolicy.NEW
        )
        return _Reader(sub)

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.close()


class _Reader:
    def __init__(self, sub: Any) -> None:
        self.sub = sub

    async def read(self, count: int, timeout: float) -> list[NativeMessage]:  # noqa: ASYNC109
        out: list[NativeMessage] = []
        while len(out) < count:
            try:
                msg = await self.sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError:
                break
            await msg.ack()
            headers = dict(msg.headers or {})
            out.append(NativeMessage(msg.data, headers, None))
        return out

    async def close(self) -> None:
        await self.sub.unsubscribe()

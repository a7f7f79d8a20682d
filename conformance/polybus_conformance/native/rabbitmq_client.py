"""RabbitMQ through pika's blocking connection, with no polybus code."""

from __future__ import annotations

import asyncio
from typing import Any

import pika

from . import NativeMessage


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Client:
    def __init__(self, url: str) -> None:
        self.params = pika.URLParameters(url.split("?")[0])

    async def publish(
        self, topic: str, body: bytes, headers: dict[str, str], key: str | None
    ) -> None:
        def send() -> None:
            conn = pika.BlockingConnection(self.params)
            try:
                chan = conn.channel()
                chan.confirm_delivery()
                # a plain AMQP producer: no message_id, no polybus headers; the routing
                # key carries the key (a fanout exchange ignores it)
                chan.basic_publish(
                    topic,
                    key or "",
                    body,
                    pika.BasicProperties(headers=dict(headers), delivery_mode=2),
                )
            finally:
                conn.close()

        await asyncio.to_thread(send)

    async def reader(self, topic: str) -> _Reader:
        reader = _Reader(self.params, topic)
        await asyncio.to_thread(reader.bind)
        return reader

    async def close(self) -> None:
        return None


class _Reader:
    def __init__(self, params: Any, exchange: str) -> None:
        self.params = params
        self.exchange = exchange

    def bind(self) -> None:
        self.conn = pika.BlockingConnection(self.params)
        self.chan = self.conn.channel()
        declared = self.chan.queue_declare("", exclusive=True, auto_delete=True)
        self.queue = declared.method.queue
        self.chan.queue_bind(self.queue, self.exchange)

    async def read(self, count: int, timeout: float) -> list[NativeMessage]:  # noqa: ASYNC109
        def take() -> list[NativeMessage]:
            out: list[NativeMessage] = []
            for method, props, body in self.chan.consume(
                self.queue, auto_ack=True, inactivity_timeout=timeout
            ):
                if method is None:
                    break
                headers = {k: _text(v) for k, v in (props.headers or {}).items()}
                out.append(NativeMessage(body, headers, None))
                if len(out) == count:
                    break
            self.chan.cancel()
            return out

        return await asyncio.to_thread(take)

    async def close(self) -> None:
        await asyncio.to_thread(self.conn.close)

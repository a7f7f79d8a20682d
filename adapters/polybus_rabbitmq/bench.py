"""The raw-pika side of ``polybus bench rabbitmq``: the same guarantees as the SDK.

Publisher confirms pipelined per call (every body written, then one wait for all the
confirms), persistent messages into a durable quorum queue (a group of the default
``ordering="none"``: no single active consumer) bound to a durable fanout exchange,
prefetch 64 and one ``basic.ack`` per message sent by ``consume`` (not by the delivery
callback, which would let the raw side consume during its publish phase), on pika's
asyncio connection adapter: the SDK's topology and I/O model. ``--raw-variant classic``
uses a classic queue instead (for reference: what the quorum queue costs).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pika
from pika.adapters.asyncio_connection import AsyncioConnection
from pika.channel import Channel

PREFETCH = 64
RAW_VARIANTS = ("quorum", "classic")
"""Queue types the raw side can use (``polybus bench rabbitmq --raw-variant``)."""


class RawPika:
    """Implements :class:`polybus.bench.RawBaseline` with pika alone."""

    def __init__(self, queue_type: str = "quorum") -> None:
        self.queue_type = queue_type
        self.description = (
            f"pika, confirms, a durable {queue_type} queue behind a fanout exchange, "
            "one basic.ack per message"
        )
        self.conn: Any = None
        self.pub: Channel | None = None
        self.sub: Channel | None = None
        self.exchange = ""
        self.queue = ""
        self.confirmed = 0
        self.sent = 0
        self.received: asyncio.Queue[int] = asyncio.Queue()
        self.confirm_waiter: asyncio.Future[None] | None = None

    async def _rpc(self, start: Any) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        start(lambda frame: _resolve(fut, frame))
        return await fut

    async def setup(self, url: str, topic: str, group: str) -> None:
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[Any] = loop.create_future()
        params = pika.URLParameters(url.split("?", 1)[0])
        self.conn = AsyncioConnection(
            params,
            on_open_callback=lambda c: opened.set_result(c),
            on_open_error_callback=lambda _c, e: opened.set_exception(e),
            custom_ioloop=loop,
        )
        await opened
        self.pub = await self._rpc(lambda cb: self.conn.channel(on_open_callback=cb))
        self.sub = await self._rpc(lambda cb: self.conn.channel(on_open_callback=cb))
        pub, sub = self.pub, self.sub
        assert pub is not None
        assert sub is not None
        self.exchange, self.queue = f"raw-{topic}", f"raw-{topic}.{group}"
        await self._rpc(
            lambda cb: pub.exchange_declare(
                self.exchange, exchange_type="fanout", durable=True, callback=cb
            )
        )
        args = {"x-queue-type": self.queue_type}
        await self._rpc(
            lambda cb: pub.queue_declare(self.queue, durable=True, arguments=args, callback=cb)
        )
        await self._rpc(lambda cb: pub.queue_bind(self.queue, self.exchange, callback=cb))
        await self._rpc(lambda cb: pub.confirm_delivery(self._on_confirm, callback=cb))
        await self._rpc(lambda cb: sub.basic_qos(prefetch_count=PREFETCH, callback=cb))

        def on_message(_ch: Channel, method: Any, _props: Any, _body: bytes) -> None:
            # acked by consume(), one by one, like the SDK's callers do
            self.received.put_nowait(method.delivery_tag)

        await self._rpc(lambda cb: sub.basic_consume(self.queue, on_message, callback=cb))

    def _on_confirm(self, frame: Any) -> None:
        tag = frame.method.delivery_tag
        if not isinstance(frame.method, pika.spec.Basic.Ack):
            raise RuntimeError(f"the broker nacked delivery {tag}")
        self.confirmed = tag if frame.method.multiple else max(self.confirmed, tag)
        waiter = self.confirm_waiter
        if waiter is not None and self.confirmed >= self.sent and not waiter.done():
            waiter.set_result(None)

    async def publish(self, bodies: list[bytes]) -> None:
        pub = self.pub
        assert pub is not None
        props = pika.BasicProperties(delivery_mode=2)
        for body in bodies:
            pub.basic_publish(self.exchange, "", body, properties=props, mandatory=True)
        self.sent += len(bodies)
        self.confirm_waiter = asyncio.get_running_loop().create_future()
        if self.confirmed < self.sent:
            await self.confirm_waiter

    async def consume(self, count: int) -> None:
        sub = self.sub
        assert sub is not None
        for _ in range(count):
            sub.basic_ack(await self.received.get())

    async def round_trip(self, body: bytes) -> None:
        await self.publish([body])
        await self.consume(1)

    async def teardown(self) -> None:
        if self.pub is not None and self.pub.is_open:
            pub = self.pub
            await self._rpc(lambda cb: pub.queue_delete(self.queue, callback=cb))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.conn.add_on_close_callback(lambda *_a: _resolve(done, None))
        self.conn.close()
        await done


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def raw_baseline(variant: str = "quorum") -> RawPika:
    """The raw-pika baseline (see the module docstring) on a ``variant`` queue."""
    return RawPika(variant)

"""Plain pika, as a client that knows nothing of polybus uses it, for the RabbitMQ tests.

Each call opens its own ``BlockingConnection`` in a worker thread (through
:func:`asyncio.to_thread`), does one thing and closes it, so the adapter under test
keeps running on the event loop meanwhile and shares nothing with it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import pika
from pika import exceptions as pe

T = TypeVar("T")


def name(what: str = "t") -> str:
    return f"pb-rmq-{what}-{uuid.uuid4().hex[:8]}"


class Native:
    """A plain AMQP client of the broker at ``url``."""

    def __init__(self, url: str) -> None:
        self.params = pika.URLParameters(url.split("?", 1)[0])

    async def _run(self, work: Callable[[Any], T]) -> T:
        def run() -> T:
            conn = pika.BlockingConnection(self.params)
            try:
                return work(conn.channel())
            finally:
                if conn.is_open:
                    conn.close()

        return await asyncio.to_thread(run)

    async def publish(
        self,
        exchange: str,
        body: bytes,
        properties: pika.BasicProperties | None = None,
        routing_key: str = "",
    ) -> None:
        """Publish with confirms, as a foreign producer does (no polybus headers)."""

        def work(ch: Any) -> None:
            ch.confirm_delivery()
            ch.basic_publish(exchange, routing_key, body, properties=properties)

        await self._run(work)

    async def get(self, queue: str) -> tuple[Any, Any, bytes] | None:
        """``basic.get`` one message and ack it: (method, properties, body), or None."""

        def work(ch: Any) -> tuple[Any, Any, bytes] | None:
            method, props, body = ch.basic_get(queue)
            if method is None:
                return None
            ch.basic_ack(method.delivery_tag)
            return method, props, body

        return await self._run(work)

    async def declare_queue(
        self, queue: str, arguments: dict[str, Any], exchange: str | None = None
    ) -> None:
        """Declare a durable queue (bound to a fanout ``exchange`` if given)."""

        def work(ch: Any) -> None:
            ch.queue_declare(queue, durable=True, arguments=arguments)
            if exchange is not None:
                ch.exchange_declare(exchange, exchange_type="fanout", durable=True)
                ch.queue_bind(queue, exchange)

        await self._run(work)

    async def has_arguments(self, queue: str, arguments: dict[str, Any]) -> bool:
        """True if ``queue`` exists with exactly these checked arguments: RabbitMQ
        accepts a redeclaration only when they are equivalent."""

        def work(ch: Any) -> bool:
            try:
                ch.queue_declare(queue, durable=True, arguments=arguments)
            except pe.ChannelClosedByBroker as exc:
                if exc.reply_code == 406:
                    return False
                raise
            return True

        return await self._run(work)

    async def exists(self, queue: str) -> bool:
        def work(ch: Any) -> bool:
            try:
                ch.queue_declare(queue, passive=True)
            except pe.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return False
                raise
            return True

        return await self._run(work)

    async def delete_queue(self, queue: str) -> None:
        await self._run(lambda ch: ch.queue_delete(queue))

"""Kafka through confluent-kafka, with no polybus code."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from confluent_kafka import Consumer, Producer

from polybus.spi import parse_url

from . import NativeMessage


class Client:
    def __init__(self, url: str) -> None:
        parsed = parse_url(url)
        self.servers = ",".join(parsed.hosts)
        self.producer = Producer({"bootstrap.servers": self.servers, "acks": "all"})

    async def publish(
        self, topic: str, body: bytes, headers: dict[str, str], key: str | None
    ) -> None:
        def send() -> None:
            errors: list[Any] = []
            self.producer.produce(
                topic,
                body,
                key.encode() if key is not None else None,
                headers=[(k, v.encode()) for k, v in headers.items()],
                on_delivery=lambda err, _msg: errors.append(err),
            )
            self.producer.flush(30)
            if errors != [None]:
                raise RuntimeError(f"native produce failed: {errors}")

        await asyncio.to_thread(send)

    async def reader(self, topic: str) -> _Reader:
        consumer = Consumer(
            {
                "bootstrap.servers": self.servers,
                "group.id": f"native-{uuid.uuid4().hex[:8]}",
                # the topic is fresh per test: reading it from the start misses nothing
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 2000,
                "heartbeat.interval.ms": 300,
                "fetch.wait.max.ms": 10,
            }
        )
        reader = _Reader(consumer, topic)
        await asyncio.to_thread(reader.join)
        return reader

    async def close(self) -> None:
        await asyncio.to_thread(self.producer.flush, 10)


class _Reader:
    def __init__(self, consumer: Any, topic: str) -> None:
        self.consumer = consumer
        self.topic = topic
        self.assigned = False

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned = True

    def join(self) -> None:
        """Subscribe and wait for the assignment."""
        self.consumer.subscribe([self.topic], on_assign=self._on_assign)
        for _ in range(300):
            self.consumer.poll(0.1)
            if self.assigned:
                return
        raise RuntimeError("the native Kafka consumer got no assignment")

    async def read(self, count: int, timeout: float) -> list[NativeMessage]:  # noqa: ASYNC109
        def take() -> list[NativeMessage]:
            out: list[NativeMessage] = []
            for rec in self.consumer.consume(count, timeout):
                if rec.error() is not None:
                    continue
                key = rec.key()
                out.append(
                    NativeMessage(
                        rec.value() or b"",
                        {k: (v or b"").decode() for k, v in (rec.headers() or [])},
                        key.decode() if key is not None else None,
                    )
                )
            return out

        out: list[NativeMessage] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < count and loop.time() < deadline:
            out += await asyncio.to_thread(take)
        return out

    async def close(self) -> None:
        await asyncio.to_thread(self.consumer.close)

"""Google Cloud Pub/Sub (or its emulator) through the gapic clients, no polybus code."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
from google.pubsub_v1 import types as ps
from google.pubsub_v1.services.publisher import PublisherAsyncClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.services.subscriber import SubscriberAsyncClient
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

from polybus.spi import parse_url

from . import NativeMessage


class Client:
    def __init__(self, url: str) -> None:
        parsed = parse_url(url)
        self.project = parsed.hosts[0]
        self.emulator = parsed.query.get("emulator")
        self._publisher: Any = None
        self._subscriber: Any = None

    def _clients(self) -> tuple[Any, Any]:
        if self._publisher is None:
            if self.emulator:
                self._publisher = PublisherAsyncClient(
                    transport=PublisherGrpcAsyncIOTransport(
                        channel=grpc.aio.insecure_channel(self.emulator)
                    )
                )
                self._subscriber = SubscriberAsyncClient(
                    transport=SubscriberGrpcAsyncIOTransport(
                        channel=grpc.aio.insecure_channel(self.emulator)
                    )
                )
            else:
                self._publisher, self._subscriber = PublisherAsyncClient(), SubscriberAsyncClient()
        return self._publisher, self._subscriber

    def _topic(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    async def publish(
        self, topic: str, body: bytes, headers: dict[str, str], key: str | None
    ) -> None:
        publisher, _ = self._clients()
        await publisher.publish(
            topic=self._topic(topic),
            messages=[ps.PubsubMessage(data=body, attributes=headers, ordering_key=key or "")],
        )

    async def reader(self, topic: str) -> _Reader:
        _, subscriber = self._clients()
        name = f"projects/{self.project}/subscriptions/native-{uuid.uuid4().hex[:12]}"
        await subscriber.create_subscription(name=name, topic=self._topic(topic))
        return _Reader(subscriber, name)

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.transport.close()
            await self._subscriber.transport.close()


class _Reader:
    def __init__(self, subscriber: Any, name: str) -> None:
        self.subscriber = subscriber
        self.name = name

    async def read(self, count: int, timeout: float) -> list[NativeMessage]:  # noqa: ASYNC109
        out: list[NativeMessage] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < count and loop.time() < deadline:
            response = await self.subscriber.pull(
                subscription=self.name, max_messages=count - len(out), timeout=5.0
            )
            ids = []
            for item in response.received_messages:
                native = item.message
                out.append(
                    NativeMessage(native.data, dict(native.attributes), native.ordering_key or None)
                )
                ids.append(item.ack_id)
            if ids:
                await self.subscriber.acknowledge(subscription=self.name, ack_ids=ids)
        return out

    async def close(self) -> None:
        await self.subscriber.delete_subscription(subscription=self.name)

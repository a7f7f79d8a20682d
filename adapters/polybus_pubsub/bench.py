"""The raw google-cloud-pubsub side of ``polybus bench pubsub``.

Same work and guarantees as the SDK side: every publish confirmed (the high-level
``PublisherClient`` with its batching, awaiting every future), a subscription like
the SDK's default group (unordered, with a dead-letter policy of 100 attempts), unary
pull of up to 256 messages and one ack id per message (acks of one pull response go in
one ``acknowledge`` call).
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.types import BatchSettings, PublisherOptions
from google.pubsub_v1 import types as ps
from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

from polybus.bench import RawBaseline

from . import _names, _settings
from ._clients import Clients, make_clients

WINDOW = 256


class RawPubSub:
    """Implements :class:`polybus.bench.RawBaseline` with google-cloud-pubsub only."""

    description = "google-cloud-pubsub PublisherClient (futures) + async unary pull/acknowledge"

    def __init__(self) -> None:
        self._publisher: pubsub_v1.PublisherClient | None = None
        self._clients: Clients | None = None
        self._topic = ""
        self._subscription = ""

    async def setup(self, url: str, topic: str, group: str) -> None:
        settings = _settings.parse(url, {})
        project = settings.project
        self._topic = f"projects/{project}/topics/{_names.topic_id(topic)}"
        dlq = f"projects/{project}/topics/{_names.topic_id(f'{topic}.{group}.dlq')}"
        self._subscription = (
            f"projects/{project}/subscriptions/{_names.subscription_id(topic, group)}"
        )
        kwargs: dict[str, Any] = dict(settings.options)
        host = settings.emulator_host
        if host:
            kwargs["transport"] = PublisherGrpcTransport(channel=grpc.insecure_channel(host))
        self._publisher = pubsub_v1.PublisherClient(
            batch_settings=BatchSettings(max_messages=1000, max_bytes=9_000_000, max_latency=0.005),
            publisher_options=PublisherOptions(enable_message_ordering=True),
            **kwargs,
        )
        self._clients = make_clients(settings)
        admin = self._clients.publisher
        for path in (self._topic, dlq):
            await admin.create_topic(name=path)
        await self._clients.subscriber.create_subscription(
            request=ps.Subscription(
                name=self._subscription,
                topic=self._topic,
                ack_deadline_seconds=settings.ack_deadline,
                dead_letter_policy=ps.DeadLetterPolicy(
                    dead_letter_topic=dlq, max_delivery_attempts=100
                ),
            )
        )

    async def publish(self, bodies: list[bytes]) -> None:
        assert self._publisher is not None
        futures = [
            asyncio.wrap_future(self._publisher.publish(self._topic, body)) for body in bodies
        ]
        await asyncio.gather(*futures)

    async def consume(self, count: int) -> None:
        assert self._clients is not None
        subscriber = self._clients.subscriber
        received = 0
        while received < count:
            response = await subscriber.pull(
                subscription=self._subscription,
                max_messages=min(WINDOW, count - received),
                timeout=30,
            )
            ids = [m.ack_id for m in response.received_messages]
            if ids:
                await subscriber.acknowledge(subscription=self._subscription, ack_ids=ids)
            received += len(ids)

    async def round_trip(self, body: bytes) -> None:
        await self.publish([body])
        await self.consume(1)

    async def teardown(self) -> None:
        if self._publisher is not None:
            await asyncio.to_thread(self._publisher.stop)
            self._publisher = None
        if self._clients is not None:
            await self._clients.close()
            self._clients = None


def raw_baseline() -> RawBaseline:
    """The raw-client baseline for ``polybus bench pubsub``."""
    return RawPubSub()

"""The raw nats-py side of ``polybus bench nats`` (see :mod:`polybus.bench`).

Same guarantees as the SDK: a file-storage, limits-retention stream; a durable pull
consumer with explicit acks created before publishing; every publish confirmed by its
PubAck and carrying a ``Nats-Msg-Id`` (the broker dedup the SDK also gives); one ack per
message. Publishing pipelines a batch with ``publish_async`` and gathers the acks.
"""

from __future__ import annotations

import asyncio
import uuid

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from polybus.bench import RawBaseline

from ._settings import parse

__all__ = ["RawNats", "raw_baseline"]

FETCH_BATCH = 256
"""Messages per pull, the SDK's default subscription window in the benchmark."""


class RawNats:
    """:class:`~polybus.bench.RawBaseline` with plain nats-py JetStream calls."""

    description = "nats-py JetStream publish_async + gathered PubAcks / pull fetch + ack"

    def __init__(self) -> None:
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._psub: JetStreamContext.PullSubscription | None = None
        self._stream = ""
        self._subject = ""

    async def setup(self, url: str, topic: str, group: str) -> None:
        settings = parse(url, {})
        auth = {"user": settings.user, "password": settings.password, "token": settings.token}
        self._nc = nc = await nats.connect(
            servers=list(settings.servers), **{k: v for k, v in auth.items() if v is not None}
        )
        self._js = js = nc.jetstream(timeout=settings.request_timeout)
        self._stream = f"raw-{uuid.uuid4().hex[:8]}"
        self._subject = f"raw.{self._stream}"
        await js.add_stream(
            StreamConfig(
                name=self._stream,
                subjects=[self._subject],
                retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE,
                duplicate_window=settings.duplicate_window,
            )
        )
        await js.add_consumer(
            self._stream,
            ConsumerConfig(
                durable_name=group,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.NEW,
                ack_wait=settings.ack_wait,
                max_ack_pending=settings.max_ack_pending,
            ),
        )
        self._psub = await js.pull_subscribe_bind(group, self._stream)

    def _ready(self) -> tuple[JetStreamContext, JetStreamContext.PullSubscription]:
        if self._js is None or self._psub is None:
            raise RuntimeError("RawNats used before setup()")
        return self._js, self._psub

    async def publish(self, bodies: list[bytes]) -> None:
        js, _ = self._ready()
        futures = [
            await js.publish_async(self._subject, body, headers={"Nats-Msg-Id": uuid.uuid4().hex})
            for body in bodies
        ]
        await asyncio.gather(*futures)

    async def consume(self, count: int) -> None:
        _, psub = self._ready()
        left = count
        while left > 0:
            for msg in await psub.fetch(min(FETCH_BATCH, left), timeout=30):
                await msg.ack()
                left -= 1

    async def round_trip(self, body: bytes) -> None:
        js, psub = self._ready()
        await js.publish(self._subject, body, headers={"Nats-Msg-Id": uuid.uuid4().hex})
        (msg,) = await psub.fetch(1, timeout=30)
        await msg.ack()

    async def teardown(self) -> None:
        if self._nc is None:
            return
        if self._js is not None:
            try:
                await self._js.delete_stream(self._stream)
            finally:
                await self._nc.close()
        self._nc = self._js = self._psub = None


def raw_baseline() -> RawBaseline:
    """The factory ``polybus bench nats`` loads."""
    return RawNats()

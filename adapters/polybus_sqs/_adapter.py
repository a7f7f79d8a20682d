"""``sqs://?region=REGION&endpoint_url=URL``: SNS topics fanning out to SQS queues."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from polybus import config
from polybus.capabilities import Capabilities, Ordering
from polybus.errors import BrokerUnavailable
from polybus.spi import Adapter, Consumer, Envelope, GroupSettings

from . import _publish, _settings, _wire
from ._client import Clients
from ._consumer import SQSConsumer
from ._errors import translate
from ._settings import SQSSettings
from ._topology import Topology

log = logging.getLogger("polybus.sqs")

ENVELOPE_RESERVE = 1024
"""Bytes kept for the envelope attribute (id, key, content type, time) and attribute
type names."""
MAX_MESSAGE_SIZE = (_wire.MAX_MESSAGE_BYTES - ENVELOPE_RESERVE) * 3 // 4
"""The declared limit (195,840 bytes): a binary body travels base64-encoded (4/3 the
size), so this is the largest message that fits SQS's 256 KiB whatever its body."""


def capabilities_for(settings: SQSSettings) -> Capabilities:
    """What SQS/SNS give in the configured mode (see README.md)."""
    return Capabilities(
        ordering=Ordering.PER_KEY if settings.fifo else Ordering.NONE,
        fan_out=settings.sns,
        competing_consumers=True,
        persistent=True,
        replay=False,
        native_delivery_count=True,
        native_dead_letter=True,
        delayed_redelivery=True,
        max_delay=float(_settings.MAX_VISIBILITY_TIMEOUT),
        broker_dedup=settings.fifo,
        max_message_size=MAX_MESSAGE_SIZE,
        max_headers=None,
    )


class SQSAdapter(Adapter):
    """SQS/SNS through boto3 (every call in this adapter's thread pool).

    A topic is an SNS topic, a group an SQS queue subscribed to it (raw delivery);
    ``fifo=true`` makes both FIFO for per-key order and broker dedup; ``sns=false``
    uses one queue per topic (one group, no fan-out). Credentials come from the
    standard AWS chain and never appear in logs, reprs or errors.
    """

    name = "sqs"

    def __init__(self, settings: SQSSettings) -> None:
        self.settings = settings
        self.capabilities = capabilities_for(settings)
        self.clients = Clients(settings)
        self.topology = Topology(self.clients, settings, self.dead_letter_topic)
        self._consumers: weakref.WeakSet[SQSConsumer] = weakref.WeakSet()
        self._open = False

    def __repr__(self) -> str:
        return f"<SQSAdapter {self.redacted_url()}>"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> SQSAdapter:
        return cls(_settings.parse(url, options))

    def redacted_url(self) -> str:
        s = self.settings
        endpoint = config.redact(s.endpoint_url) if s.endpoint_url else None
        query = {"region": s.region, "endpoint_url": endpoint}
        if s.fifo:
            query["fifo"] = "true"
        if not s.sns:
            query["sns"] = "false"
        shown = urlencode({k: v for k, v in query.items() if v}, safe=":/@*")
        return config.redact(f"sqs://?{shown}" if shown else "sqs://")

    async def open(self) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                await self.clients.open()
        except TimeoutError as exc:
            self.clients.close()
            raise BrokerUnavailable(
                f"no answer from SQS/SNS at {self.redacted_url()} within "
                f"{self.settings.connect_timeout} s (connect_timeout)"
            ) from exc
        except BaseException:
            self.clients.close()
            raise
        self._open = True

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        for consumer in list(self._consumers):
            await consumer.close()
        self.clients.close()

    async def ensure_topic(self, topic: str) -> None:
        await self.topology.ensure_topic(topic)

    async def ensure_group(self, topic: str, group: str, settings: GroupSettings) -> None:
        await self.topology.ensure_group(topic, group, settings.max_deliveries)

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        wires = _publish.encode_all(topic, envelopes, fifo=self.settings.fifo)
        if self.settings.sns:
            arn = await self.topology.topic_arn(topic)

            async def send(entries: list[dict[str, Any]]) -> dict[str, Any]:
                return await self._send(
                    "publish_batch", topic, TopicArn=arn, PublishBatchRequestEntries=entries
                )

            make = _publish.sns_entry
        else:
            queue = await self.topology.topic_queue(topic)

            async def send(entries: list[dict[str, Any]]) -> dict[str, Any]:
                return await self._send(
                    "send_message_batch", topic, QueueUrl=queue.url, Entries=entries
                )

            make = _publish.sqs_entry
        await _publish.publish(topic, wires, send, make, ordered=self.settings.fifo)

    async def _send(self, op: str, topic: str, **kwargs: Any) -> dict[str, Any]:
        call = self.clients.raw_sns if self.settings.sns else self.clients.raw_sqs
        try:
            entries = kwargs.get("PublishBatchRequestEntries") or kwargs.get("Entries") or []
            if len(entries) == 1:
                # one message: the plain call is cheaper than a batch of one, and an
                # error raised by it is the whole (one-entry) batch failing
                return await self._send_one(call, entries[0], kwargs)
            out: dict[str, Any] = await call(op, **kwargs)
        except Exception as exc:
            # PublishError (failed ids filled in by the caller), or ConfigError (credentials)
            raise translate(
                exc, f"publish to topic {topic!r}", secrets=self.clients.secrets, publish_ids=()
            ) from exc
        return out

    async def _send_one(
        self, call: Any, entry: dict[str, Any], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        single = {k: v for k, v in entry.items() if k != "Id"}
        if self.settings.sns:
            await call("publish", TopicArn=kwargs["TopicArn"], **single)
        else:
            await call("send_message", QueueUrl=kwargs["QueueUrl"], **single)
        return {"Successful": [{"Id": entry["Id"]}], "Failed": []}

    def consumer(self, topic: str, group: str, *, max_in_flight: int) -> Consumer:
        consumer = SQSConsumer(self, topic, group, max_in_flight=max_in_flight)
        self._consumers.add(consumer)
        return consumer

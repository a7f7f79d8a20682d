"""``sqs://?region=REGION&endpoint_url=URL``: SNS topics fanning out to SQS queues."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from polybus.errors import BrokerUnavailable, ConfigError, PublishError
from polybus.spi import Adapter, Capabilities, Consumer, Envelope, GroupSpec, Lag, redact

from . import _publish, _settings, _wire
from ._client import Clients
from ._consumer import SQSConsumer
from ._errors import translate
from ._settings import SQSSettings
from ._topology import Topology

ENVELOPE_RESERVE = 1024
"""Bytes kept for the envelope attribute (id, key, content type, time) and attribute
type names."""
MAX_MESSAGE_SIZE = (_wire.MAX_MESSAGE_BYTES - ENVELOPE_RESERVE) * 3 // 4
"""The declared limit (195,840 bytes): a binary body travels base64-encoded (4/3 the
size), so this is the largest message that fits SQS's 256 KiB whatever its body."""
_SNS_CALLS = ("publish_batch", "publish", "PublishBatchRequestEntries")
_SQS_CALLS = ("send_message_batch", "send_message", "Entries")
"""(batch call, single call, the batch call's entries argument) of each publish path."""
KEY_ORDER_REFUSAL = (
    "SQS standard queues deliver in no order; connect with fifo=true for per-key order "
    "(SQS FIFO message groups)"
)


def capabilities_for(settings: SQSSettings) -> Capabilities:
    """What SQS/SNS give in the configured mode (see README.md)."""
    return Capabilities(
        competing_consumers=True,
        key_order=settings.fifo,
        key_order_competing=settings.fifo,
        fan_out=settings.sns,
        persistent=True,
        replay=False,
        native_delivery_count=True,
        native_dead_letter=False,
        delayed_redelivery=True,
        max_delay=float(_settings.MAX_VISIBILITY_TIMEOUT),
        broker_dedup=settings.fifo,
        max_message_size=MAX_MESSAGE_SIZE,
        max_headers=None,
        # GetQueueAttributes' approximate counts; the age of the oldest message is a
        # CloudWatch metric only (ApproximateAgeOfOldestMessage), not read here
        lag_messages=True,
        lag_seconds=False,
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
        self.publish_timeout = settings.publish_timeout
        self.key_order_refusal: str | None = None if settings.fifo else KEY_ORDER_REFUSAL
        self.clients = Clients(settings)
        self.topology = Topology(self.clients, settings)
        self._open = False

    def __repr__(self) -> str:
        s = self.settings
        query = {"region": s.region, "endpoint_url": s.endpoint_url}
        if s.fifo:
            query["fifo"] = "true"
        if not s.sns:
            query["sns"] = "false"
        shown = urlencode({k: v for k, v in query.items() if v}, safe=":/@*")
        return f"<SQSAdapter {redact(f'sqs://?{shown}' if shown else 'sqs://')}>"

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> SQSAdapter:
        return cls(_settings.parse(url, options))

    async def open(self) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                await self.clients.open()
        except TimeoutError as exc:
            self.clients.close()
            raise BrokerUnavailable(
                f"no answer from SQS/SNS at {self!r} within "
                f"{self.settings.connect_timeout} s (connect_timeout)"
            ) from exc
        except BaseException:
            self.clients.close()
            raise
        self._open = True

    async def close(self) -> None:
        if self._open:
            self._open = False
            self.clients.close()

    async def declare(self, topic: str, group: GroupSpec | None) -> None:
        if group is None:
            await self.topology.declare_topic(topic)
            return
        if group.key_ordered and not self.settings.fifo:
            raise ConfigError("ordering", f"sqs: {KEY_ORDER_REFUSAL}")
        await self.topology.declare_group(topic, group.group, group.ordering)

    async def publish(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        wires = _publish.encode_all(topic, envelopes, fifo=self.settings.fifo)
        confirmed: set[str] = set()
        try:
            async with asyncio.timeout(self.publish_timeout):
                await self._publish(topic, wires, confirmed)
        except TimeoutError:
            raise PublishError(
                f"publish to topic {topic!r}: {len(wires) - len(confirmed)} of {len(wires)} "
                f"messages not confirmed within {self.publish_timeout:g}s (publish_timeout)",
                retryable=True,
                failed_ids=tuple(w.id for w in wires if w.id not in confirmed),
            ) from None

    async def _publish(self, topic: str, wires: list[_wire.Wire], confirmed: set[str]) -> None:
        if self.settings.sns:
            arn = await self.topology.topic_arn(topic)
            target: dict[str, str] = {"TopicArn": arn}
            batch_op, one_op, entries_field = _SNS_CALLS
            make = _publish.sns_entry
        else:
            queue = await self.topology.topic_queue(topic)
            target = {"QueueUrl": queue.url}
            batch_op, one_op, entries_field = _SQS_CALLS
            make = _publish.sqs_entry

        async def send(entries: list[dict[str, Any]]) -> dict[str, Any]:
            try:
                if len(entries) == 1:
                    # one message: the plain call is cheaper than a batch of one, and an
                    # error raised by it is the whole (one-entry) batch failing
                    single = {k: v for k, v in entries[0].items() if k != "Id"}
                    await self.clients.raw(one_op, **target, **single)
                    return {"Failed": []}
                out: dict[str, Any] = await self.clients.raw(
                    batch_op, **target, **{entries_field: entries}
                )
            except Exception as exc:
                # PublishError (failed ids filled in by the caller), or ConfigError
                raise translate(
                    exc, f"publish to topic {topic!r}", secrets=self.clients.secrets, publish_ids=()
                ) from exc
            return out

        await _publish.publish(
            topic, wires, send, make, ordered=self.settings.fifo, confirmed=confirmed
        )

    async def lag(self, group: GroupSpec) -> Lag:
        """The messages of the group's queue not deleted yet (SQS's approximate visible +
        not visible + delayed counts); no age (see the README)."""
        return Lag(await self.topology.backlog(group.topic, group.group), None)

    async def delete_group(self, group: GroupSpec) -> None:
        await self.topology.delete_group(group.topic, group.group)

    def consumer(self, group: GroupSpec, *, max_in_flight: int) -> Consumer:
        name = self.topology.queue_name(group.topic, group.group)
        known = self.topology.known_queue(group.topic, group.group)
        return SQSConsumer(self.clients, self.settings, group, name, known)

"""The raw baseline for ``polybus bench sqs``: the same work with boto3 alone.

Same topology and guarantees as the SDK in its default (standard) mode: an SNS topic,
an SQS queue subscribed with raw delivery, publishes confirmed by PublishBatch (10 per
call, batches sent concurrently from threads), each message received by long polling
and acked with its own DeleteMessage, awaited before the next. moto slows down as a
queue fills, so run it with a few hundred messages per round
(``polybus bench sqs --messages 300``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
from typing import Any

import boto3

from polybus.bench import RawBaseline
from polybus.errors import PolybusError

from ._settings import parse


class Boto3Baseline:
    """:class:`polybus.bench.RawBaseline` over boto3's SNS and SQS clients."""

    description = "boto3 SNS publish_batch + SQS receive_message / delete_message"

    def __init__(self) -> None:
        self._sns: Any = None
        self._sqs: Any = None
        self._topic_arn = ""
        self._queue_url = ""
        self._buffer: list[dict[str, Any]] = []

    async def setup(self, url: str, topic: str, group: str) -> None:
        s = parse(url, {})
        session = boto3.session.Session()
        kwargs = {"region_name": s.region, "endpoint_url": s.endpoint_url}
        self._sns = session.client("sns", **kwargs)
        self._sqs = session.client("sqs", **kwargs)
        self._topic_arn = (await self._call(self._sns.create_topic, Name=topic))["TopicArn"]
        name = f"{topic}-{group}-raw"
        self._queue_url = (await self._call(self._sqs.create_queue, QueueName=name))["QueueUrl"]
        attrs = await self._call(
            self._sqs.get_queue_attributes, QueueUrl=self._queue_url, AttributeNames=["QueueArn"]
        )
        arn = attrs["Attributes"]["QueueArn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": self._topic_arn}},
                }
            ],
        }
        await self._call(
            self._sqs.set_queue_attributes,
            QueueUrl=self._queue_url,
            Attributes={"Policy": json.dumps(policy)},
        )
        await self._call(
            self._sns.subscribe,
            TopicArn=self._topic_arn,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true"},
        )

    async def publish(self, bodies: list[bytes]) -> None:
        async def batch(start: int) -> None:
            entries = [
                # SNS bodies are text: binary bodies go base64, as the SDK sends them
                {"Id": str(i), "Message": _text(body)}
                for i, body in enumerate(bodies[start : start + 10])
            ]
            out = await self._call(
                self._sns.publish_batch,
                TopicArn=self._topic_arn,
                PublishBatchRequestEntries=entries,
            )
            if out.get("Failed"):
                raise PolybusError(f"raw publish refused: {out['Failed'][0]}")

        await asyncio.gather(*(batch(i) for i in range(0, len(bodies), 10)))

    async def consume(self, count: int) -> None:
        for _ in range(count):
            await self._take_one()

    async def round_trip(self, body: bytes) -> None:
        await self._call(self._sns.publish, TopicArn=self._topic_arn, Message=_text(body))
        await self._take_one()

    async def _take_one(self) -> None:
        while not self._buffer:
            out = await self._call(
                self._sqs.receive_message,
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
            self._buffer.extend(out.get("Messages") or [])
        msg = self._buffer.pop(0)
        await self._call(
            self._sqs.delete_message, QueueUrl=self._queue_url, ReceiptHandle=msg["ReceiptHandle"]
        )

    async def teardown(self) -> None:
        for client in (self._sns, self._sqs):
            if client is not None:
                client.close()

    @staticmethod
    async def _call(fn: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(functools.partial(fn, **kwargs))


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii")


def raw_baseline() -> RawBaseline:
    return Boto3Baseline()


__all__ = ["Boto3Baseline", "raw_baseline"]

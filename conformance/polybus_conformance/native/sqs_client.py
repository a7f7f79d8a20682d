"""SNS and SQS through boto3, with no polybus code: a foreign producer publishes to the
SNS topic; a foreign reader subscribes a queue of its own (raw delivery)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import boto3

from polybus.spi import parse_url

from . import NativeMessage


class Client:
    def __init__(self, url: str) -> None:
        query = parse_url(url).query
        self.fifo = query.get("fifo", "false").lower() in ("1", "true", "yes", "on")
        common = {
            "region_name": query.get("region") or "us-east-1",
            "endpoint_url": query.get("endpoint_url"),
        }
        self.sns: Any = boto3.client("sns", **common)
        self.sqs: Any = boto3.client("sqs", **common)

    def _arn(self, topic: str) -> str:
        name = f"{topic}.fifo" if self.fifo else topic
        attrs = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if self.fifo else {}
        return str(self.sns.create_topic(Name=name, Attributes=attrs)["TopicArn"])

    async def publish(
        self, topic: str, body: bytes, headers: dict[str, str], key: str | None
    ) -> None:
        def send() -> None:
            extra: dict[str, Any] = {}
            if self.fifo:
                extra["MessageGroupId"] = key or uuid.uuid4().hex
                extra["MessageDeduplicationId"] = uuid.uuid4().hex
            self.sns.publish(
                TopicArn=self._arn(topic),
                Message=body.decode(),
                MessageAttributes={
                    k: {"DataType": "String", "StringValue": v} for k, v in headers.items()
                },
                **extra,
            )

        await asyncio.to_thread(send)

    async def reader(self, topic: str) -> _Reader:
        def bind() -> _Reader:
            arn = self._arn(topic)
            name = f"native-{uuid.uuid4().hex[:12]}" + (".fifo" if self.fifo else "")
            attrs = {"FifoQueue": "true"} if self.fifo else {}
            url = self.sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
            queue_arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "sns.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": queue_arn,
                        "Condition": {"ArnEquals": {"aws:SourceArn": arn}},
                    }
                ],
            }
            self.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
            self.sns.subscribe(
                TopicArn=arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes={"RawMessageDelivery": "true"},
            )
            return _Reader(self.sqs, url)

        return await asyncio.to_thread(bind)

    async def close(self) -> None:
        return None


class _Reader:
    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs = sqs
        self.url = url

    async def read(self, count: int, timeout: float) -> list[NativeMessage]:  # noqa: ASYNC109
        def take() -> list[NativeMessage]:
            out: list[NativeMessage] = []
            got = self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=min(10, count),
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
                AttributeNames=["MessageGroupId"],
            )
            for m in got.get("Messages") or []:
                headers = {
                    k: a["StringValue"]
                    for k, a in (m.get("MessageAttributes") or {}).items()
                    if "StringValue" in a
                }
                key = (m.get("Attributes") or {}).get("MessageGroupId")
                out.append(NativeMessage(m["Body"].encode(), headers, key))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])
            return out

        out: list[NativeMessage] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < count and loop.time() < deadline:
            out += await asyncio.to_thread(take)
        return out

    async def close(self) -> None:
        await asyncio.to_thread(self.sqs.delete_queue, QueueUrl=self.url)

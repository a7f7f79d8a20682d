"""Shared helpers of the SQS adapter tests. The broker itself comes from the
``sqs_url`` fixture (``conftest.py``): a real moto server (or LocalStack/AWS through
``POLYBUS_SQS_URL``), never an in-process mock."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import Iterator
from typing import Any

import boto3

from polybus.spi import parse_url
from polybus_conformance.netfault import FaultProxy
from polybus_conformance.operations import through
from polybus_conformance.provisioning import urls
from polybus_conformance.provisioning.base import free_port


def name(label: str) -> str:
    """A unique topic or group name."""
    return f"t-{label}-{uuid.uuid4().hex[:8]}"


def with_options(url: str, **options: object) -> str:
    """``url`` with extra query options (replacing any of the same name)."""
    return str(urls.with_options(url, options))


class Native:
    """Plain boto3 clients for the broker of a polybus ``sqs://`` URL (no polybus code):
    what another service would use to reach polybus's queues and topics."""

    def __init__(self, url: str) -> None:
        query = parse_url(url).query
        common = {
            "region_name": query.get("region") or "us-east-1",
            "endpoint_url": query.get("endpoint_url"),
        }
        self.sqs: Any = boto3.client("sqs", **common)
        self.sns: Any = boto3.client("sns", **common)

    async def call(self, client: Any, op: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(functools.partial(getattr(client, op), **kwargs))

    async def queue_url(self, queue_name: str) -> str:
        found = await self.call(self.sqs, "get_queue_url", QueueName=queue_name)
        return str(found["QueueUrl"])

    async def tags(self, queue_name: str) -> dict[str, str]:
        url = await self.queue_url(queue_name)
        out = await self.call(self.sqs, "list_queue_tags", QueueUrl=url)
        return dict(out.get("Tags") or {})

    async def attributes(self, queue_name: str) -> dict[str, str]:
        url = await self.queue_url(queue_name)
        out = await self.call(
            self.sqs, "get_queue_attributes", QueueUrl=url, AttributeNames=["All"]
        )
        return dict(out["Attributes"])

    async def receive_all(self, queue_name: str, count: int) -> list[dict[str, Any]]:
        """Receive (and delete) ``count`` messages of a queue the native way."""
        url = await self.queue_url(queue_name)
        out: list[dict[str, Any]] = []
        for _ in range(30):
            if len(out) >= count:
                break
            got = await self.call(
                self.sqs,
                "receive_message",
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                MessageAttributeNames=["All"],
            )
            for m in got.get("Messages") or []:
                out.append(m)
                await self.call(
                    self.sqs, "delete_message", QueueUrl=url, ReceiptHandle=m["ReceiptHandle"]
                )
        return out


@contextlib.contextmanager
def proxied(url: str) -> Iterator[tuple[str, FaultProxy]]:
    """``url`` through a fault proxy of its own (cut / stall / restore), stopped after."""
    port = free_port()
    through_url, upstream = through(url, port)
    proxy = FaultProxy(*upstream, port=port).start()
    try:
        yield through_url, proxy
    finally:
        proxy.restore()
        proxy.stop()

"""Settling SQS messages in batches: DeleteMessageBatch for acks, and
ChangeMessageVisibilityBatch for releases and lease extensions (10 entries per call,
the calls of one settlement sent concurrently)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ._client import Clients

log = logging.getLogger("polybus.sqs")

BATCH = 10


def _chunks(handles: Sequence[str]) -> list[Sequence[str]]:
    return [handles[i : i + BATCH] for i in range(0, len(handles), BATCH)]


def visibility_entries(handles: Sequence[str], seconds: int) -> list[dict[str, Any]]:
    return [
        {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": seconds}
        for i, h in enumerate(handles)
    ]


async def delete(
    clients: Clients, queue_url: str, queue_name: str, handles: Sequence[str]
) -> dict[str, str]:
    """Delete the messages of ``handles``; return the ones SQS refused (handle ->
    reason). A call that fails as a whole raises (translated)."""
    action = f"ack (delete) on queue {queue_name!r}"
    if len(handles) == 1:
        # a lone ack (the common case of awaiting each ack): the plain call is cheaper
        await clients.sqs("delete_message", action, QueueUrl=queue_url, ReceiptHandle=handles[0])
        return {}

    async def one(part: Sequence[str]) -> dict[str, str]:
        entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(part)]
        out = await clients.sqs("delete_message_batch", action, QueueUrl=queue_url, Entries=entries)
        return {
            part[int(f["Id"])]: f"{f.get('Code')}: {f.get('Message', '')}"
            for f in out.get("Failed") or ()
        }

    failed: dict[str, str] = {}
    for part in await asyncio.gather(*(one(p) for p in _chunks(handles))):
        failed.update(part)
    return failed


async def change_visibility(
    clients: Clients, queue_url: str, queue_name: str, handles: Sequence[str], seconds: int
) -> int:
    """Set the visibility timeout of ``handles``; return how many SQS refused (a
    message settled meanwhile is refused; it needs no lease any more)."""
    action = f"change message visibility on queue {queue_name!r}"

    async def one(part: Sequence[str]) -> int:
        out = await clients.sqs(
            "change_message_visibility_batch",
            action,
            QueueUrl=queue_url,
            Entries=visibility_entries(part, seconds),
        )
        for failure in out.get("Failed") or ():
            # usually a message acked while its lease was being extended: harmless
            log.debug("visibility change refused queue=%s code=%s", queue_name, failure.get("Code"))
        return len(out.get("Failed") or ())

    return sum(await asyncio.gather(*(one(p) for p in _chunks(handles))))

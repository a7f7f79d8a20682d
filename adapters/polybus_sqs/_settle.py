"""Settling SQS messages in batches: DeleteMessageBatch for acks, and
ChangeMessageVisibilityBatch for releases and lease extensions (10 per call).

Acks that arrive while a batch call is in flight (a worker settling many messages
at once) share the next call; each ``ack`` still waits for its own confirmation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from polybus.errors import PolybusError

from ._client import Clients

log = logging.getLogger("polybus.sqs")

BATCH = 10


class Deleter:
    """Batches the deletes (acks) of one queue."""

    def __init__(self, clients: Clients, queue_url: str, queue_name: str) -> None:
        self.clients = clients
        self.queue_url = queue_url
        self.queue_name = queue_name
        self._pending: list[tuple[str, str, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def delete(self, message_id: str, receipt: str) -> None:
        """Delete one message; returns once SQS confirmed it (raises if it did not)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((message_id, receipt, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        await asyncio.shield(future)

    async def flush(self) -> None:
        """Wait until every delete asked for so far has been answered."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let acks settled in the same loop turn join the batch
        while self._pending:
            chunks = [self._pending[i : i + BATCH] for i in range(0, len(self._pending), BATCH)]
            self._pending = []
            await asyncio.gather(*(self._send(chunk) for chunk in chunks))

    async def _send(self, chunk: list[tuple[str, str, asyncio.Future[None]]]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": r} for i, (_, r, _f) in enumerate(chunk)]
        action = f"ack (delete) on queue {self.queue_name!r}"
        try:
            if len(chunk) == 1:
                # a lone ack (the common case of awaiting each ack): the plain call is
                # cheaper than a batch of one
                await self.clients.sqs(
                    "delete_message", action, QueueUrl=self.queue_url, ReceiptHandle=chunk[0][1]
                )
                out: dict[str, Any] = {}
            else:
                out = await self.clients.sqs(
                    "delete_message_batch", action, QueueUrl=self.queue_url, Entries=entries
                )
        except Exception as exc:
            for _, _, future in chunk:
                if not future.done():
                    future.set_exception(exc)
            return
        failed = {int(f["Id"]): f for f in out.get("Failed") or ()}
        for i, (message_id, _, future) in enumerate(chunk):
            if future.done():
                continue
            if i in failed:
                f = failed[i]
                future.set_exception(
                    PolybusError(
                        f"ack of message {message_id} on queue {self.queue_name!r} failed: "
                        f"{f.get('Code')}: {f.get('Message', '')}; SQS will redeliver it"
                    )
                )
            else:
                future.set_result(None)


async def change_visibility(
    clients: Clients, queue_url: str, queue_name: str, receipts: Sequence[str], seconds: int
) -> int:
    """Set the visibility timeout of ``receipts``; return how many SQS refused (a
    message settled meanwhile is refused; it needs no lease any more)."""
    refused = 0
    for start in range(0, len(receipts), BATCH):
        part = receipts[start : start + BATCH]
        entries: list[dict[str, Any]] = [
            {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": seconds}
            for i, r in enumerate(part)
        ]
        out = await clients.sqs(
            "change_message_visibility_batch",
            f"change message visibility on queue {queue_name!r}",
            QueueUrl=queue_url,
            Entries=entries,
        )
        for failure in out.get("Failed") or ():
            refused += 1
            # usually a message acked while its lease was being extended: harmless
            log.debug("visibility change refused queue=%s code=%s", queue_name, failure.get("Code"))
    return refused

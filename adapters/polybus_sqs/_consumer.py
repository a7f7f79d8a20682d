"""The consumer of one group's SQS queue: long polling, leases, settlement.

* ``fetch`` long-polls ``ReceiveMessage`` for at most the free in-flight slots (10 at
  most per call). The receive runs in a thread and survives a cancelled ``fetch``:
  its messages are returned by the next ``fetch``, or released by ``close``.
* While a message is unsettled its visibility timeout is extended (every third of
  ``visibility_timeout``), so a long handler does not see its message redelivered.
* ``ack`` deletes (batched), ``nack(delay)`` sets the visibility timeout to ``delay``
  (0 when None), ``close`` makes every unsettled message visible again at once.
* ``delivery_attempt`` is SQS's ``ApproximateReceiveCount``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polybus import headers as h
from polybus._deadletter import DLQ_GROUP
from polybus._message import Message
from polybus.errors import SettlementError
from polybus.spi import Consumer

from . import _settle, _wire
from ._settings import MAX_VISIBILITY_TIMEOUT
from ._topology import TAG_LIMIT, TAG_ORIGIN_GROUP, TAG_ORIGIN_TOPIC, Queue

if TYPE_CHECKING:
    from ._adapter import SQSAdapter

log = logging.getLogger("polybus.sqs")

MAX_RECEIVE = 10


@dataclass(slots=True, eq=False)
class Lease:
    """One received, unsettled message: its receipt handle and lease times."""

    receipt: str
    received: float
    extended: float = field(default=0.0)


class SQSConsumer(Consumer):
    """Reads one group's queue. Use from one event loop."""

    def __init__(self, adapter: SQSAdapter, topic: str, group: str, *, max_in_flight: int) -> None:
        self.adapter = adapter
        self.clients = adapter.clients
        self.settings = adapter.settings
        self.topic = topic
        self.group = group
        self.max_in_flight = max_in_flight
        self.queue: Queue | None = None
        self._leases: dict[str, Lease] = {}
        self._stash: deque[Message] = deque()
        self._receive: asyncio.Task[list[dict[str, Any]]] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._deleter: _settle.Deleter | None = None
        self._origin: dict[str, str] | None = None
        self._closed = False

    async def open(self) -> None:
        self.queue = await self.adapter.topology.group_queue(self.topic, self.group)
        self._deleter = _settle.Deleter(self.clients, self.queue.url, self.queue.name)
        if self.group == DLQ_GROUP:
            tags = await self.adapter.topology.tags(self.queue)
            self._origin = tags if TAG_ORIGIN_TOPIC in tags else None
        self._heartbeat = asyncio.create_task(self._extend_leases())

    # -- receiving ----------------------------------------------------------------

    async def fetch(self, max_messages: int) -> Sequence[Message]:
        if self._closed or self.queue is None:
            raise SettlementError(f"consumer of group {self.group!r} is not open")
        while True:
            if self._stash:
                count = min(max_messages, len(self._stash))
                return [self._stash.popleft() for _ in range(count)]
            if self._receive is None:
                self._receive = asyncio.create_task(self._receive_batch(max_messages))
            # shielded: if this fetch is cancelled the receive goes on, and its
            # messages wait in the stash for the next fetch (or for close)
            receive = self._receive
            try:
                raw = await asyncio.shield(receive)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._receive = None  # a failed receive took no message: ask again next time
                raise
            self._receive = None
            self._stash.extend(self._to_message(m) for m in raw)

    async def _receive_batch(self, max_messages: int) -> list[dict[str, Any]]:
        assert self.queue is not None
        out = await self.clients.sqs(
            "receive_message",
            f"receive from queue {self.queue.name!r}",
            QueueUrl=self.queue.url,
            MaxNumberOfMessages=max(1, min(MAX_RECEIVE, max_messages)),
            WaitTimeSeconds=self.settings.wait_time_seconds,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=[
                "ApproximateReceiveCount",
                "MessageGroupId",
                "SentTimestamp",
            ],
        )
        messages: list[dict[str, Any]] = out.get("Messages") or []
        now = time.monotonic()
        for m in messages:
            self._leases[m["ReceiptHandle"]] = Lease(m["ReceiptHandle"], now, now)
        return messages

    def _to_message(self, raw: dict[str, Any]) -> Message:
        decoded = _wire.decode(raw)
        attempt = int((raw.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
        headers = decoded.headers
        if self._origin is not None and h.DLQ_REASON not in headers:
            attempt = self._label_redriven(headers, attempt)
        return Message(
            id=decoded.id,
            topic=self.topic,
            body=decoded.body,
            group=self.group,
            key=decoded.key,
            headers=headers,
            content_type=decoded.content_type,
            published_at=decoded.published_at,
            delivery_attempt=max(1, attempt),
            raw=raw,
            receipt=raw["ReceiptHandle"],
        )

    def _label_redriven(self, headers: dict[str, str], attempt: int) -> int:
        """A message SQS's redrive policy moved here has no polybus dead-letter
        metadata: add what the queue tags tell (the copy polybus makes has it all).
        Its receive count kept counting the original queue's deliveries."""
        origin = self._origin or {}
        limit = origin.get(TAG_LIMIT, "")
        headers[h.DLQ_REASON] = f"delivery limit of {limit} reached (SQS redrive policy)"
        headers[h.DLQ_ORIGINAL_TOPIC] = origin.get(TAG_ORIGIN_TOPIC, "")
        headers[h.DLQ_ORIGINAL_GROUP] = origin.get(TAG_ORIGIN_GROUP, "")
        if limit.isdigit():
            headers[h.DLQ_ATTEMPTS] = limit
            return attempt - int(limit)
        return attempt

    # -- settling -----------------------------------------------------------------

    def _take(self, message: Message, verb: str) -> Lease:
        lease = self._leases.pop(str(message.receipt), None)
        if lease is None or self.queue is None:
            raise SettlementError(f"cannot {verb} message {message.id}: not in flight here")
        return lease

    async def ack(self, message: Message) -> None:
        lease = self._take(message, "ack")
        assert self._deleter is not None
        await self._deleter.delete(message.id, lease.receipt)

    async def nack(self, message: Message, delay: float | None) -> None:
        lease = self._take(message, "nack")
        assert self.queue is not None
        seconds = 0 if not delay else math.ceil(delay)
        # SQS counts 12 hours from the receive, not from this call
        room = MAX_VISIBILITY_TIMEOUT - math.ceil(time.monotonic() - lease.received) - 1
        if seconds > room:
            log.warning(
                "nack delay %ss of message %s exceeds SQS's 12 h visibility limit; using %ss",
                seconds,
                message.id,
                room,
            )
            seconds = max(0, room)
        await self.clients.sqs(
            "change_message_visibility",
            f"nack message {message.id} on queue {self.queue.name!r}",
            QueueUrl=self.queue.url,
            ReceiptHandle=lease.receipt,
            VisibilityTimeout=seconds,
        )

    # -- leases -------------------------------------------------------------------

    async def _extend_leases(self) -> None:
        period = max(1.0, self.settings.visibility_timeout / 3)
        while True:
            await asyncio.sleep(period / 2)
            now = time.monotonic()
            due = [lease for lease in self._leases.values() if now - lease.extended >= period]
            if not due or self.queue is None:
                continue
            try:
                await _settle.change_visibility(
                    self.clients,
                    self.queue.url,
                    self.queue.name,
                    [lease.receipt for lease in due],
                    self.settings.visibility_timeout,
                )
            except Exception as exc:
                log.warning("lease extension failed group=%s: %s", self.group, exc)
                continue
            for lease in due:
                lease.extended = now

    # -- closing ------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._receive is not None:
            # a long poll in flight ends within wait_time_seconds; its messages are
            # leased below and released with the rest
            with contextlib.suppress(Exception):
                await self._receive
            self._receive = None
        if self._deleter is not None:
            await self._deleter.flush()
        self._stash.clear()
        receipts = [lease.receipt for lease in self._leases.values()]
        self._leases.clear()
        if receipts and self.queue is not None:
            try:
                await _settle.change_visibility(
                    self.clients, self.queue.url, self.queue.name, receipts, 0
                )
            except Exception as exc:
                # they come back anyway when their visibility timeout ends
                log.warning(
                    "releasing %d unsettled messages failed group=%s: %s",
                    len(receipts),
                    self.group,
                    exc,
                )

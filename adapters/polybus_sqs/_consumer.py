"""The consumer of one group's SQS queue: long-poll receive, settlement, leases.

* :meth:`SQSConsumer.receive` long-polls ``ReceiveMessage`` (``wait_time_seconds``)
  in a thread for at most the free slots (10 at most per call), until it gets at
  least one message. ``delivery_attempt`` is SQS's ``ApproximateReceiveCount``.
* ``ack`` deletes (``DeleteMessageBatch``, 10 per call), ``nack(delay)`` sets the
  visibility timeout to ``delay`` (rounded up; 0 when None), ``extend`` sets it to
  ``visibility_timeout`` again (``lease``); both stop at SQS's 12 hours from the
  receive.
* ``close`` waits for a receive still in flight (at most ``wait_time_seconds`` and a
  little) and makes every received, unsettled message visible again at once. A
  receive that answers even later releases its messages when it does.
* Transient failures raise :class:`~polybus.errors.BrokerUnavailable`: the core
  retires this consumer and opens a fresh one (nothing here reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

from polybus.errors import PolybusError, SettlementError
from polybus.spi import Consumer, GroupSpec, Message

from . import _settle, _wire
from ._client import Clients
from ._settings import MAX_VISIBILITY_TIMEOUT, SQSSettings
from ._topology import Queue

log = logging.getLogger("polybus.sqs")

MAX_RECEIVE = 10
"""SQS returns at most 10 messages per ReceiveMessage."""
CLOSE_MARGIN = 2.0
"""Seconds past ``wait_time_seconds`` that ``close`` waits for a receive in flight."""
SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "MessageGroupId", "SentTimestamp"]


class SQSConsumer(Consumer):
    """Reads one group's queue. Use from one event loop.

    ``exclusive_keys`` stays False, also on FIFO queues: one ReceiveMessage returns
    several messages of one message group at once, so the core's per-key hand-out
    keeps the order within this consumer, while SQS keeps a message group away from
    every other consumer as long as one of its messages is received here.
    """

    exclusive_keys = False

    def __init__(
        self,
        clients: Clients,
        settings: SQSSettings,
        spec: GroupSpec,
        queue_name: str,
        queue: Queue | None,
    ) -> None:
        self.clients = clients
        self.settings = settings
        self.spec = spec
        self.queue_name = queue_name
        self.queue_url = queue.url if queue is not None else None
        self.lease = float(settings.visibility_timeout)
        self._held: dict[str, float] = {}
        """Receipt handle -> monotonic receive time of every unsettled message."""
        self._polling: asyncio.Future[Any] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<SQSConsumer queue={self.queue_name!r} unsettled={len(self._held)}>"

    async def open(self) -> None:
        if self.queue_url is None:
            found = await self.clients.sqs(
                "get_queue_url", f"find queue {self.queue_name!r}", QueueName=self.queue_name
            )
            self.queue_url = str(found["QueueUrl"])

    # -- receiving ------------------------------------------------------------------

    async def receive(self, max_messages: int) -> Sequence[Message]:
        url = self._url("receive")
        while True:
            extra = {}
            if self.settings.fifo:
                # botocore's retry of a receive whose answer was lost gets the same
                # messages again, instead of locking their message groups until the
                # visibility timeout
                extra["ReceiveRequestAttemptId"] = uuid.uuid4().hex
            polling = asyncio.ensure_future(
                self.clients.receive(
                    f"receive from queue {self.queue_name!r}",
                    QueueUrl=url,
                    MaxNumberOfMessages=max(1, min(MAX_RECEIVE, max_messages)),
                    WaitTimeSeconds=self.settings.wait_time_seconds,
                    VisibilityTimeout=self.settings.visibility_timeout,
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=SYSTEM_ATTRIBUTES,
                    **extra,
                )
            )
            # whatever the call takes from the broker is held here as soon as it
            # answers, even if this receive is cancelled (close releases it)
            polling.add_done_callback(self._received)
            self._polling = polling
            try:
                out = await asyncio.shield(polling)
            finally:
                if polling.done():
                    self._polling = None
            raw: list[dict[str, Any]] = out.get("Messages") or []
            if raw:
                return [self._message(m) for m in raw]

    def _received(self, polling: asyncio.Future[Any]) -> None:
        if polling.cancelled() or polling.exception() is not None:
            return
        now = time.monotonic()
        handles = [m["ReceiptHandle"] for m in polling.result().get("Messages") or ()]
        if self._closed:  # answered after close gave up waiting: give them back now
            self._release_late(handles)
            return
        for handle in handles:
            self._held[handle] = now

    def _message(self, raw: dict[str, Any]) -> Message:
        decoded = _wire.decode(raw)
        attempt = int((raw.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
        return Message(
            id=decoded.id,
            topic=self.spec.topic,
            body=decoded.body,
            group=self.spec.group,
            key=decoded.key,
            headers=decoded.headers,
            content_type=decoded.content_type,
            published_at=decoded.published_at,
            delivery_attempt=max(1, attempt),
            raw=raw,
            receipt=raw["ReceiptHandle"],
        )

    # -- settling -------------------------------------------------------------------

    def _url(self, verb: str) -> str:
        if self.queue_url is None or self._closed:
            raise SettlementError(
                f"cannot {verb}: the consumer of queue {self.queue_name!r} is not open"
            )
        return self.queue_url

    async def ack(self, messages: Sequence[Message]) -> None:
        url = self._url("ack")
        taken = {str(m.receipt): self._held.pop(str(m.receipt), time.monotonic()) for m in messages}
        try:
            failed = await _settle.delete(self.clients, url, self.queue_name, list(taken))
        except BaseException:
            self._held.update(taken)  # not deleted: close gives them back at once
            raise
        if failed:
            self._held.update({h: taken[h] for h in failed})
            ids = [m.id for m in messages if str(m.receipt) in failed]
            raise PolybusError(
                f"ack of {len(ids)} message(s) on queue {self.queue_name!r} failed "
                f"({', '.join(ids[:5])}): {next(iter(failed.values()))}; SQS redelivers them"
            )

    async def nack(self, message: Message, delay: float | None) -> None:
        url = self._url("nack")
        handle = str(message.receipt)
        received = self._held.pop(handle, time.monotonic())
        seconds = 0 if not delay else math.ceil(delay)
        room = self._room(received)
        if seconds > room:
            log.warning(
                "nack delay %ss of message %s exceeds SQS's 12 h visibility limit; using %ss",
                seconds,
                message.id,
                room,
            )
            seconds = room
        try:
            await self.clients.sqs(
                "change_message_visibility",
                f"nack message {message.id} on queue {self.queue_name!r}",
                QueueUrl=url,
                ReceiptHandle=handle,
                VisibilityTimeout=seconds,
            )
        except BaseException:
            self._held[handle] = received
            raise

    async def extend(self, messages: Sequence[Message]) -> None:
        url = self._url("extend")
        by_seconds: dict[int, list[str]] = {}
        for msg in messages:
            handle = str(msg.receipt)
            received = self._held.get(handle)
            if received is None:
                continue  # settled meanwhile
            seconds = min(self.settings.visibility_timeout, self._room(received))
            if seconds > 0:
                by_seconds.setdefault(seconds, []).append(handle)
        for seconds, handles in by_seconds.items():
            await _settle.change_visibility(self.clients, url, self.queue_name, handles, seconds)

    @staticmethod
    def _room(received: float) -> int:
        """Whole seconds of visibility SQS still grants a message received then."""
        return max(0, MAX_VISIBILITY_TIMEOUT - math.ceil(time.monotonic() - received) - 1)

    # -- closing --------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        polling = self._polling
        if polling is not None and not polling.done():
            # a long poll ends within wait_time_seconds; one stuck on the network is
            # left behind (its messages are released when it answers, see _received)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.shield(polling), self.settings.wait_time_seconds + CLOSE_MARGIN
                )
        self._closed = True
        handles = list(self._held)
        self._held.clear()
        if handles and self.queue_url is not None:
            try:
                await _settle.change_visibility(
                    self.clients, self.queue_url, self.queue_name, handles, 0
                )
            except Exception as exc:
                # they come back anyway when their visibility timeout ends
                log.warning(
                    "releasing %d unsettled messages of queue %s failed: %s",
                    len(handles),
                    self.queue_name,
                    exc,
                )

    def _release_late(self, handles: list[str]) -> None:
        if not handles or self.queue_url is None:
            return
        for start in range(0, len(handles), _settle.BATCH):
            self.clients.submit(
                "change_message_visibility_batch",
                QueueUrl=self.queue_url,
                Entries=_settle.visibility_entries(handles[start : start + _settle.BATCH], 0),
            )

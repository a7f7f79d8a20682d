"""One subscription's deliveries from a durable pull consumer.

Pull requests go out on a private inbox; what arrives is buffered here and handed out
by :meth:`NatsConsumer.fetch`, so a cancelled fetch loses nothing. At most one pull
request is outstanding and it asks for no more than the free slots the core offers,
so fetched-but-unsettled messages never exceed ``max_in_flight``.

While a message is unsettled the consumer sends in-progress acks every third of
``ack_wait``: a long handler is never redelivered behind its back, while a dead
process's messages come back after ``ack_wait``.

Delivery limit: a message delivered more often than the group's ``max_deliveries``
(JetStream's ``max_deliver`` is that plus one) is copied to the dead-letter topic and
terminated here, without reaching the application. If JetStream gives up on a message
because that last delivery was never settled, its MAX_DELIVERIES advisory makes a live
consumer of the group publish the copy (see ``_advisory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from polybus._deadletter import dead_letter_envelope
from polybus._message import Message
from polybus.errors import BrokerUnavailable, SettlementError
from polybus.spi import Consumer

from . import _errors, _headers
from ._advisory import AdvisoryHandler

if TYPE_CHECKING:
    from ._adapter import NatsAdapter
    from ._topology import GroupRef

log = logging.getLogger("polybus.nats")

GRACE = 2.0
"""Seconds past a pull request's expiry after which it counts as lost (no status came,
for example across a reconnect) and a new one may be sent."""
END_STATUSES = frozenset({"404", "408", "409"})


class NatsConsumer(Consumer):
    """Not thread-safe: used from the event loop of its adapter."""

    def __init__(self, adapter: NatsAdapter, ref: GroupRef) -> None:
        self.adapter = adapter
        self.ref = ref
        self.limit: int | None = None
        self._buffer: deque[Msg] = deque()
        self._unsettled: dict[int, Msg] = {}
        self._outstanding = 0
        self._request_deadline = 0.0
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._advisory: AdvisoryHandler | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._error: Exception | None = None
        self._closed = False
        stream, consumer = ref.topic.stream, ref.consumer
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"

    def __repr__(self) -> str:
        return f"<NatsConsumer topic={self.ref.topic.topic!r} group={self.ref.group!r}>"

    async def open(self) -> None:
        nc, js = self.adapter.nc, self.adapter.js
        stream, consumer = self.ref.topic.stream, self.ref.consumer
        try:
            info = await js.consumer_info(stream, consumer)
        except _errors.NATIVE as exc:
            raise _errors.unavailable(exc, "group") from exc
        max_deliver = info.config.max_deliver or -1
        self.limit = max_deliver - 1 if max_deliver > 1 else None
        self._sub = await nc.subscribe(nc.new_inbox(), cb=self._on_message)
        self._advisory = AdvisoryHandler(self.adapter, self.ref)
        await self._advisory.start()
        self._ticker = asyncio.create_task(self._keep_alive())

    # -- receiving ------------------------------------------------------------------

    async def _on_message(self, msg: Msg) -> None:
        status = (msg.headers or {}).get("Status")
        if status is not None:
            self._on_status(status, msg)
            return
        if self._closed:
            await msg.nak()  # a late answer to our last pull request
            return
        self._outstanding = max(0, self._outstanding - 1)
        if self.limit is not None and msg.metadata.num_delivered > self.limit:
            self._spawn(self._dead_letter(msg))
        else:
            self._buffer.append(msg)
            self._unsettled[id(msg)] = msg
        self._wake.set()

    def _on_status(self, status: str, msg: Msg) -> None:
        if status in END_STATUSES:
            self._outstanding = 0
            self._wake.set()
        if status == "409":
            text = (msg.headers or {}).get("Description", "")
            log.warning("pull request refused for %r: %s", self, text)
            if "Deleted" in text:
                self._error = BrokerUnavailable(
                    f"group {self.ref.group!r} of topic {self.ref.topic.topic!r} was deleted"
                )

    def reconnected(self) -> None:
        """The connection came back: a pull request pending before is gone."""
        self._outstanding = 0
        self._wake.set()

    async def fetch(self, max_messages: int) -> Sequence[Message]:
        while True:
            if self._error is not None:
                raise self._error
            if self._closed or self._sub is None:
                raise SettlementError(f"{self!r} is not open")
            if self._buffer:
                count = min(max_messages, len(self._buffer))
                return [self._to_message(self._buffer.popleft()) for _ in range(count)]
            now = time.monotonic()
            if self._outstanding == 0 or now > self._request_deadline:
                await self._pull(max_messages)
            self._wake.clear()
            timeout = max(0.0, self._request_deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _pull(self, batch: int) -> None:
        assert self._sub is not None
        expires = self.adapter.settings.fetch_expires
        request = {"batch": batch, "expires": int(expires * 1e9)}
        self._outstanding = batch
        self._request_deadline = time.monotonic() + expires + GRACE
        try:
            await self.adapter.nc.publish(
                self._next_subject, json.dumps(request).encode(), reply=self._sub.subject
            )
        except _errors.NATIVE as exc:
            self._outstanding = 0
            raise _errors.unavailable(exc, "fetch") from exc

    def _to_message(self, msg: Msg) -> Message:
        meta = msg.metadata
        fields = _headers.decode(msg.headers)
        return Message(
            id=fields.id or f"{meta.stream}:{meta.sequence.stream}",
            topic=self.ref.topic.topic,
            body=msg.data,
            group=self.ref.group,
            key=fields.key,
            headers=fields.headers,
            content_type=fields.content_type,
            published_at=fields.published_at or meta.timestamp,
            delivery_attempt=meta.num_delivered,
            raw=msg,
            receipt=msg,
        )

    # -- settling -------------------------------------------------------------------

    def _take(self, message: Message) -> Msg:
        msg = self._unsettled.pop(id(message.receipt), None)
        if msg is None:
            raise SettlementError(f"message {message.id} is not in flight on {self!r}")
        return msg

    async def ack(self, message: Message) -> None:
        await self._settle(self._take(message), "ack")

    async def nack(self, message: Message, delay: float | None) -> None:
        msg = self._take(message)
        try:
            await msg.nak(delay=delay)
        except _errors.NATIVE as exc:
            raise _errors.unavailable(exc, "nack") from exc

    async def dead_lettered(self, message: Message) -> None:
        # the copy is confirmed: TERM tells JetStream never to deliver it again
        await self._settle(self._take(message), "term")

    async def _settle(self, msg: Msg, verb: str) -> None:
        try:
            await (msg.ack() if verb == "ack" else msg.term())
        except _errors.NATIVE as exc:
            raise _errors.unavailable(exc, verb) from exc

    async def _keep_alive(self) -> None:
        period = max(0.2, self.adapter.settings.ack_wait / 3)
        while True:
            await asyncio.sleep(period)
            for msg in list(self._unsettled.values()):
                try:
                    await msg.in_progress()
                except Exception as exc:  # next tick retries; ack_wait is the backstop
                    log.debug("in-progress ack failed for %r: %s", self, _errors.describe(exc))
                    break

    # -- delivery limit -------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dead_letter(self, msg: Msg) -> None:
        message = self._to_message(msg)
        message.delivery_attempt -= 1  # the attempts the application saw
        copy = dead_letter_envelope(message, f"delivery limit of {self.limit} reached")
        dlq = self.adapter.dead_letter_topic(self.ref.topic.topic, self.ref.group)
        try:
            await self.adapter.ensure_topic(dlq)
            await self.adapter.publish(dlq, [copy])
        except Exception as exc:  # logged; the advisory or a redelivery retries
            log.error(
                "dead-letter copy failed topic=%s group=%s id=%s: %s",
                self.ref.topic.topic,
                self.ref.group,
                message.id,
                exc,
            )
            with contextlib.suppress(Exception):
                await msg.nak()
            return
        log.warning(
            "dead-lettered topic=%s group=%s id=%s reason=delivery limit",
            self.ref.topic.topic,
            self.ref.group,
            message.id,
        )
        with contextlib.suppress(Exception):
            await msg.term()

    # -- closing --------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self._buffer.clear()
        unsettled, self._unsettled = list(self._unsettled.values()), {}
        for msg in unsettled:
            with contextlib.suppress(Exception):
                await msg.nak()
        if self._sub is not None:
            # without interest the server drops our pending pull request
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        if self._advisory is not None:
            await self._advisory.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.adapter.settings.request_timeout)
        with contextlib.suppress(Exception):
            await self.adapter.nc.flush(timeout=int(self.adapter.settings.request_timeout) or 1)

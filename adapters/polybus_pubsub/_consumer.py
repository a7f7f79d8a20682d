"""The consumer of one group: unary pull, per-key gating, leases, settlement.

Why unary pull: on the emulator, streaming pull with acks measured 2k msg/s against
29k for unary pull, and a unary pull maps directly onto ``fetch`` (ask for the free
slots, get at most that many) with no client threads to hand messages across.

Per-key order: Pub/Sub hands out a key's messages in order, but after a nack a
later message already delivered could be acked before the nacked one returns. So
this consumer hands out at most one message per key at a time and holds the later
ones (their leases extended); a nack gives back the message and every held later
message of its key, in order, so the broker redelivers the key from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.pubsub_v1 import types as ps

from polybus._deadletter import dead_letter_envelope
from polybus.errors import BrokerUnavailable, SettlementError
from polybus.spi import Consumer, Message

from . import _errors, _wire
from ._batch import Coalescer

if TYPE_CHECKING:
    from ._adapter import PubSubAdapter

log = logging.getLogger("polybus.pubsub")

MAX_ACK_IDS = 2500
"""Ack ids per acknowledge / modify_ack_deadline request (well under the 512 KB cap)."""


class PubSubConsumer(Consumer):
    """Deliveries of one group (a Pub/Sub subscription) to one polybus subscription."""

    def __init__(
        self, adapter: PubSubAdapter, topic: str, group: str, *, max_in_flight: int
    ) -> None:
        self.adapter = adapter
        self.topic = topic
        self.group = group
        self.max_in_flight = max_in_flight
        self.path = adapter.subscription_path(topic, group)
        self.limit = adapter.limits.get((topic, group))
        self._ready: deque[Message] = deque()
        self._held: dict[str, deque[Message]] = {}
        self._busy: dict[str, str] = {}  # key -> ack id of its message handed out
        self._leased: dict[str, tuple[Message, float]] = {}  # ack id -> (message, since)
        self._pull: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lease_task: asyncio.Task[None] | None = None
        self._acks: Coalescer[str] | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------

    async def open(self) -> None:
        subscriber = self.adapter.clients.subscriber
        path = self.path

        async def acknowledge(ids: list[str]) -> None:
            await subscriber.acknowledge(subscription=path, ack_ids=ids)

        self._acks = Coalescer(acknowledge, max_items=MAX_ACK_IDS)
        self._lease_task = asyncio.get_running_loop().create_task(self._lease_loop())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        for task in (self._pull, self._lease_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if self._acks is not None:
            await self._acks.drain()
        # everything fetched and not settled goes back now, not at the ack deadline
        unsettled = [ack_id for ack_id in self._leased]
        self._leased.clear()
        self._ready.clear()
        self._held.clear()
        self._busy.clear()
        if unsettled:
            try:
                await self._modify(unsettled, 0)
            except Exception as exc:  # they come back at the ack deadline anyway
                log.warning(
                    "group=%s: could not release %d messages: %s", self.group, len(unsettled), exc
                )

    # -- fetching -------------------------------------------------------------------

    async def fetch(self, max_messages: int) -> Sequence[Message]:
        while True:
            if self._closed:
                raise SettlementError(f"consumer of group {self.group!r} is closed")
            if self._ready:
                count = min(max_messages, len(self._ready))
                return [self._ready.popleft() for _ in range(count)]
            self._wake.clear()
            room = self.max_in_flight - sum(len(q) for q in self._held.values())
            if self._pull is None and room > 0:
                self._pull = asyncio.get_running_loop().create_task(
                    self._pull_into_ready(min(max_messages, room))
                )
            waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
            pull = self._pull
            try:
                # the pull task outlives a cancelled fetch: what it takes lands in
                # _ready for the next fetch (or goes back to the broker on close)
                await asyncio.wait(
                    [*waiters, *([pull] if pull else [])], return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if pull is not None and pull.done():
                self._pull = None
                if not pull.cancelled():
                    pull.result()  # raises BrokerUnavailable and the like

    async def _pull_into_ready(self, count: int) -> None:
        subscriber = self.adapter.clients.subscriber
        settings = self.adapter.settings
        failing_since: float | None = None
        while not self._closed:
            try:
                response = await subscriber.pull(
                    subscription=self.path,
                    max_messages=count,
                    timeout=settings.pull_timeout,
                    retry=None,
                )
            except gexc.DeadlineExceeded:
                continue  # a long poll that found nothing
            except Exception as exc:
                if not _errors.is_transient(exc):
                    raise _errors.admin_error(
                        exc, f"pulling group {self.group!r}", "group"
                    ) from exc
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > settings.connect_timeout:
                    raise BrokerUnavailable(
                        f"pulling group {self.group!r}: Pub/Sub unreachable "
                        f"for {settings.connect_timeout} s"
                    ) from exc
                await asyncio.sleep(0.2)
                continue
            if response.received_messages:
                await self._accept(response.received_messages)
                return

    async def _accept(self, received: Sequence[ps.ReceivedMessage]) -> None:
        now = time.monotonic()
        for item in received:
            msg = self._message(item)
            if self.limit is not None and msg.delivery_attempt > self.limit:
                await self._dead_letter_at_limit(msg)
                continue
            self._leased[item.ack_id] = (msg, now)
            key = msg.key
            if key and (key in self._busy or key in self._held):
                self._held.setdefault(key, deque()).append(msg)
                continue
            if key:
                self._busy[key] = item.ack_id
            self._ready.append(msg)

    def _message(self, item: ps.ReceivedMessage) -> Message:
        native = item.message
        fields, key = _wire.decode(native.attributes, native.ordering_key)
        published = fields.published_at
        if published is None and native.publish_time:
            published = native.publish_time
        return Message(
            id=fields.id or native.message_id,
            topic=self.topic,
            body=native.data,
            group=self.group,
            key=key,
            headers=fields.headers,
            content_type=fields.content_type,
            published_at=published,
            # 0 only on a subscription without dead-letter policy (the terminal one)
            delivery_attempt=max(1, item.delivery_attempt),
            raw=item,
            receipt=item.ack_id,
        )

    async def _dead_letter_at_limit(self, msg: Message) -> None:
        # the copy records the attempts made, not the delivery that found the limit
        made = dataclasses.replace(msg, delivery_attempt=msg.delivery_attempt - 1)
        copy = dead_letter_envelope(made, f"delivery limit of {self.limit} reached")
        dlq = self.adapter.dead_letter_topic(self.topic, self.group)
        try:
            await self.adapter.publish(dlq, [copy])
        except Exception as exc:
            log.error(
                "group=%s id=%s: dead-letter publish failed, nacking: %s", self.group, msg.id, exc
            )
            await self._modify([msg.receipt], 0)
            return
        log.warning(
            "dead-lettered topic=%s group=%s id=%s reason=delivery limit",
            self.topic,
            self.group,
            msg.id,
        )
        await self._ack_ids([msg.receipt])

    # -- settlement -----------------------------------------------------------------

    def _settle(self, message: Message) -> str:
        ack_id = message.receipt
        if not isinstance(ack_id, str) or self._leased.pop(ack_id, None) is None:
            raise SettlementError(f"message {message.id} is not in flight on this consumer")
        return ack_id

    def _release_key(self, message: Message) -> None:
        key = message.key
        if not key or self._busy.get(key) != message.receipt:
            return
        del self._busy[key]
        held = self._held.get(key)
        if held:
            nxt = held.popleft()
            if not held:
                del self._held[key]
            self._busy[key] = nxt.receipt
            self._ready.append(nxt)
            self._wake.set()

    async def ack(self, message: Message) -> None:
        ack_id = self._settle(message)
        self._release_key(message)
        await self._ack_ids([ack_id])

    async def _ack_ids(self, ids: list[str]) -> None:
        if self.adapter.settings.exactly_once:
            await self._confirmed_ack(ids)
            return
        # at-least-once: acks are batched; a lost ack means a redelivery
        assert self._acks is not None
        self._acks.submit(ids).add_done_callback(self._log_ack_failure)

    async def _confirmed_ack(self, ids: list[str]) -> None:
        """Exactly-once: the ack is final only once Pub/Sub confirmed it, so it is sent
        on its own (errors are per ack id) and transient refusals are retried."""
        subscriber = self.adapter.clients.subscriber
        deadline = time.monotonic() + self.adapter.settings.connect_timeout
        while True:
            try:
                await subscriber.acknowledge(subscription=self.path, ack_ids=ids)
                return
            except Exception as exc:
                if not _errors.ack_retryable(exc) or time.monotonic() > deadline:
                    raise SettlementError(
                        f"ack of {len(ids)} message(s) on group {self.group!r} not confirmed "
                        f"by Pub/Sub (they will be redelivered): {exc}"
                    ) from exc
                await asyncio.sleep(0.05)

    def _log_ack_failure(self, done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.warning(
                "group=%s: ack failed (messages will be redelivered): %s",
                self.group,
                done.exception(),
            )

    async def nack(self, message: Message, delay: float | None) -> None:
        ack_id = self._settle(message)
        ids = [ack_id]
        key = message.key
        if key and self._busy.get(key) == ack_id:
            del self._busy[key]
            # later messages of the key go back too, so none overtakes this one
            for later in self._held.pop(key, ()):
                self._leased.pop(later.receipt, None)
                ids.append(later.receipt)
        seconds = 0 if not delay else min(600, math.ceil(delay))
        if len(ids) > 1:
            self._wake.set()  # the held messages gave back free room for a pull
        await self._modify(ids, seconds)

    async def _modify(self, ack_ids: list[str], seconds: int) -> None:
        subscriber = self.adapter.clients.subscriber
        for start in range(0, len(ack_ids), MAX_ACK_IDS):
            chunk = ack_ids[start : start + MAX_ACK_IDS]
            try:
                await subscriber.modify_ack_deadline(
                    subscription=self.path, ack_ids=chunk, ack_deadline_seconds=seconds
                )
            except Exception as exc:
                raise _errors.admin_error(exc, f"nack on group {self.group!r}", "group") from exc

    # -- leases ---------------------------------------------------------------------

    async def _lease_loop(self) -> None:
        """Keep unsettled messages invisible to others while a handler works on them."""
        settings = self.adapter.settings
        period = max(1.0, settings.ack_deadline / 3)
        while not self._closed:
            await asyncio.sleep(period)
            now = time.monotonic()
            ids = [i for i, (_, since) in self._leased.items() if now - since < settings.max_lease]
            if not ids:
                continue
            try:
                await self._modify(ids, settings.ack_deadline)
            except Exception as exc:
                log.warning("group=%s: lease extension failed: %s", self.group, exc)

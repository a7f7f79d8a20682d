"""Confirmed, mandatory publishing on one channel, pipelined.

Every message of a batch is written at once; the batch then waits for the broker's
confirms (``basic.ack`` with ``multiple`` settles many at a time), so a batch costs one
round trip rather than one per message. ``mandatory`` makes the broker return a message
no queue took; on a fanout exchange that only happens when the topic has no group at
all (see ``on_unroutable``). When the channel or the connection dies, every message not
yet confirmed fails with a retryable :class:`~polybus.errors.PublishError` naming it;
confirmed messages are already safe in their durable queues.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from pika import spec

from polybus.errors import PublishError
from polybus.spi import Envelope

from . import _errors, _wire
from ._link import Chan, Link

log = logging.getLogger("polybus.rabbitmq")


class _Batch:
    """The confirms one ``publish`` call waits for: one future for the whole batch."""

    __slots__ = ("error", "future", "lost", "nacked", "remaining", "returned")

    def __init__(self, future: asyncio.Future[None], size: int) -> None:
        self.future = future
        self.remaining = size
        self.nacked: list[str] = []
        self.returned: list[str] = []
        self.error: BaseException | None = None
        self.lost: list[str] = []

    def settle(self, id: str, ok: bool) -> None:
        if not ok:
            self.nacked.append(id)
        self.remaining -= 1
        if self.remaining <= 0 and not self.future.done():
            self.future.set_result(None)

    def fail(self, reason: BaseException) -> None:
        self.error = reason
        if not self.future.done():
            self.future.set_result(None)


class Publisher:
    """Publishes batches with confirms. Used from the event loop only."""

    def __init__(self, link: Link, publish_timeout: float) -> None:
        self.link = link
        self.publish_timeout = publish_timeout
        self._chan: Chan | None = None
        self._opening: asyncio.Lock | None = None
        self._next_tag = 0
        self._pending: OrderedDict[int, tuple[_Batch, str]] = OrderedDict()
        self._by_id: dict[str, _Batch] = {}

    async def _channel(self) -> Chan:
        if self._chan is not None and self._chan.is_open:
            return self._chan
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._chan is not None and self._chan.is_open:
                return self._chan
            chan = await self.link.channel()
            await chan.call(lambda cb: chan.native.confirm_delivery(self._on_confirm, callback=cb))
            chan.native.add_on_return_callback(self._on_return)
            chan.on_close(self._on_channel_close)
            self._chan = chan
            self._next_tag = 0
            return chan

    async def publish(
        self,
        exchange: str,
        envelopes: Sequence[Envelope],
        *,
        routing_key: str = "",
        attempts_done: int = 0,
        expiration_ms: int | None = None,
    ) -> list[str]:
        """Publish ``envelopes`` to ``exchange``; return the ids the broker returned as
        unroutable (confirmed, but no queue took them). Raise PublishError otherwise."""
        chan = await self._channel()
        batch = _Batch(self.link.loop.create_future(), len(envelopes))
        sent: list[str] = []
        try:
            for env in envelopes:
                props = _wire.properties(
                    env, attempts_done=attempts_done, expiration_ms=expiration_ms
                )
                chan.native.basic_publish(
                    exchange, routing_key, env.body, properties=props, mandatory=True
                )
                self._next_tag += 1
                self._pending[self._next_tag] = (batch, env.id)
                self._by_id[env.id] = batch
                sent.append(env.id)
        except Exception as exc:
            self._forget(batch)
            unsent = tuple(e.id for e in envelopes[len(sent) :])
            raise _errors.publish_error(
                chan.reason or exc, "publish failed", tuple(sent) + unsent
            ) from exc
        try:
            async with asyncio.timeout(self.publish_timeout):
                await batch.future
        except TimeoutError:
            unconfirmed = self._forget(batch)
            raise PublishError(
                f"no confirm within {self.publish_timeout:g}s for {len(unconfirmed)} "
                f"messages to exchange {exchange!r}",
                retryable=True,
                failed_ids=tuple(unconfirmed),
            ) from None
        finally:
            for id in sent:
                if self._by_id.get(id) is batch:
                    del self._by_id[id]
        if batch.error is not None:
            unconfirmed = self._forget(batch)
            raise _errors.publish_error(
                batch.error,
                f"publish to exchange {exchange!r} not confirmed",
                tuple(batch.nacked) + tuple(batch.lost) + tuple(unconfirmed),
            )
        if batch.nacked:
            raise PublishError(
                f"the broker nacked {len(batch.nacked)} messages to exchange {exchange!r}",
                retryable=True,
                failed_ids=tuple(batch.nacked),
            )
        return batch.returned

    def _forget(self, batch: _Batch) -> list[str]:
        """Drop the unconfirmed messages of ``batch``; return their ids."""
        tags = [t for t, (b, _id) in self._pending.items() if b is batch]
        return [self._pending.pop(t)[1] for t in tags]

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, spec.Basic.Ack)
        tag = method.delivery_tag
        pending = self._pending
        if method.multiple:
            while pending:
                first = next(iter(pending))
                if first > tag:
                    break
                batch, id = pending.pop(first)
                batch.settle(id, ok)
        else:
            item = pending.pop(tag, None)
            if item is not None:
                item[0].settle(item[1], ok)

    def _on_return(self, _channel: Any, _method: Any, props: Any, _body: bytes) -> None:
        # a return always precedes the confirm of the same message
        batch = self._by_id.get(props.message_id or "")
        if batch is not None:
            batch.returned.append(props.message_id)

    def _on_channel_close(self, reason: BaseException) -> None:
        pending, self._pending = self._pending, OrderedDict()
        for batch, id in pending.values():
            batch.lost.append(id)
            batch.fail(reason)
        self._chan = None

    async def close(self) -> None:
        chan, self._chan = self._chan, None
        if chan is not None:
            await chan.close()

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

from polybus._message import Envelope
from polybus.errors import PublishError

from . import _errors, _wire
from ._link import Chan, Link

log = logging.getLogger("polybus.rabbitmq")


class _Pending:
    __slots__ = ("future", "id", "returned")

    def __init__(self, future: asyncio.Future[bool], id: str) -> None:
        self.future = future
        self.id = id
        self.returned = False


class Publisher:
    """Publishes batches with confirms. Used from the event loop only."""

    def __init__(self, link: Link, publish_timeout: float) -> None:
        self.link = link
        self.publish_timeout = publish_timeout
        self._chan: Chan | None = None
        self._opening: asyncio.Lock | None = None
        self._next_tag = 0
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._by_id: dict[str, _Pending] = {}

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
        loop = self.link.loop
        waits: list[_Pending] = []
        try:
            for env in envelopes:
                props = _wire.properties(
                    env, attempts_done=attempts_done, expiration_ms=expiration_ms
                )
                chan.native.basic_publish(
                    exchange, routing_key, env.body, properties=props, mandatory=True
                )
                self._next_tag += 1
                item = _Pending(loop.create_future(), env.id)
                self._pending[self._next_tag] = item
                self._by_id[env.id] = item
                waits.append(item)
        except Exception as exc:
            self._forget(waits)
            sent = {w.id for w in waits}
            unsent = tuple(e.id for e in envelopes if e.id not in sent)
            raise _errors.publish_error(
                chan.reason or exc, "publish failed", tuple(sorted(sent)) + unsent
            ) from exc
        try:
            async with asyncio.timeout(self.publish_timeout):
                await asyncio.wait([w.future for w in waits])
        except TimeoutError:
            failed = tuple(w.id for w in waits if not w.future.done())
            self._forget(waits)
            raise PublishError(
                f"no confirm within {self.publish_timeout:g}s for {len(failed)} messages "
                f"to exchange {exchange!r}",
                retryable=True,
                failed_ids=failed,
            ) from None
        finally:
            for w in waits:
                if self._by_id.get(w.id) is w:
                    del self._by_id[w.id]
        failed = tuple(
            w.id for w in waits if w.future.exception() is not None or not w.future.result()
        )
        if failed:
            first = next(
                (w.future.exception() for w in waits if w.future.exception() is not None), None
            )
            if first is not None:
                raise _errors.publish_error(
                    first, f"publish to exchange {exchange!r} not confirmed", failed
                )
            raise PublishError(
                f"the broker nacked {len(failed)} messages to exchange {exchange!r}",
                retryable=True,
                failed_ids=failed,
            )
        return [w.id for w in waits if w.returned]

    def _forget(self, waits: list[_Pending]) -> None:
        drop = {id(w) for w in waits}
        for tag in [t for t, p in self._pending.items() if id(p) in drop]:
            del self._pending[tag]

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, spec.Basic.Ack)
        tag = method.delivery_tag
        if method.multiple:
            while self._pending:
                first = next(iter(self._pending))
                if first > tag:
                    break
                self._settle(self._pending.pop(first), ok)
        else:
            item = self._pending.pop(tag, None)
            if item is not None:
                self._settle(item, ok)

    @staticmethod
    def _settle(item: _Pending, ok: bool) -> None:
        if not item.future.done():
            item.future.set_result(ok)

    def _on_return(self, _channel: Any, _method: Any, props: Any, _body: bytes) -> None:
        # a return always precedes the confirm of the same message
        item = self._by_id.get(props.message_id or "")
        if item is not None:
            item.returned = True

    def _on_channel_close(self, reason: BaseException) -> None:
        pending, self._pending = self._pending, OrderedDict()
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(reason)
        self._chan = None

    async def close(self) -> None:
        chan, self._chan = self._chan, None
        if chan is not None:
            await chan.close()

"""Pipelined, confirmed JetStream publishing over one reply inbox.

Every message of a batch is sent at once, each with its own reply subject, and the
PubAcks are gathered afterwards: one round trip of latency for the whole batch. (nats-py
has ``publish_async``, but an API error in a PubAck leaves its future pending forever,
so polybus parses acks itself.)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Mapping, Sequence

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from . import _errors

__all__ = ["Publisher"]


class Publisher:
    """Sends messages with a reply subject and resolves one future per PubAck."""

    def __init__(self, nc: NATS, timeout: float) -> None:
        self._nc = nc
        self._timeout = timeout
        self._prefix = f"{nc.new_inbox()}."
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[int]] = {}
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._prefix}*", cb=self._on_ack)

    async def stop(self) -> None:
        for future in self._waiting.values():
            future.cancel()
        self._waiting.clear()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            # a closed connection has dropped the subscription already
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()

    async def _on_ack(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is None or future.done():
            return  # a late ack for a publish that already timed out
        headers = msg.headers or {}
        if headers.get("Status") == "503":
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = json.loads(msg.data)
        except ValueError as exc:
            future.set_exception(exc)
            return
        error = reply.get("error")
        if error:
            future.set_exception(
                nats.js.errors.APIError(
                    code=error.get("code"),
                    err_code=error.get("err_code"),
                    description=error.get("description"),
                )
            )
        else:
            future.set_result(int(reply.get("seq", 0)))

    async def publish(
        self,
        topic: str,
        subject: str,
        messages: Sequence[tuple[str, bytes, Mapping[str, str]]],
    ) -> None:
        """Publish ``(id, body, headers)`` triples; return once all are confirmed.

        Raises :class:`polybus.errors.PublishError` listing the unconfirmed ids (every id not listed
        was stored; a retry with the same ids is deduplicated by ``Nats-Msg-Id``).
        """
        loop = asyncio.get_running_loop()
        pending: list[tuple[str, str, asyncio.Future[int]]] = []
        failed: list[str] = []
        first_error: BaseException | None = None
        try:
            for index, (msg_id, body, headers) in enumerate(messages):
                token = str(next(self._tokens))
                future: asyncio.Future[int] = loop.create_future()
                self._waiting[token] = future
                pending.append((msg_id, token, future))
                try:
                    await self._nc.publish(
                        subject,
                        body,
                        reply=self._prefix + token,
                        headers=dict(headers),
                    )
                except _errors.NATIVE as exc:
                    # nothing after this one was sent; earlier ones may still confirm
                    first_error = exc
                    self._waiting.pop(token, None)
                    pending.pop()
                    failed.extend(m[0] for m in messages[index:])
                    break
            if pending:
                await asyncio.wait([f for _, _, f in pending], timeout=self._timeout)
            for msg_id, _token, future in pending:
                if not future.done():
                    failed.append(msg_id)
                    first_error = first_error or nats.errors.TimeoutError()
                elif future.cancelled() or future.exception() is not None:
                    failed.append(msg_id)
                    first_error = first_error or future.exception() or asyncio.CancelledError()
        finally:
            for _, token, future in pending:
                self._waiting.pop(token, None)
                if not future.done():
                    future.cancel()
        if first_error is not None:
            raise _errors.publish_error(first_error, topic, tuple(failed)) from first_error

"""Ack batching: the acks of a subscription reach each consumer in batches.

A Worker settles every message in a task of its own, so acks arrive one at a time.
Sent one adapter call each, they cost one broker command each (on Redis one ``XACK``
and one pooled connection per message: past the pool's size, acks queued for
connections without bound and timed out under load). Here the first ack of a consumer
starts its flusher; the acks made before the flusher runs, or while its ack call is in
flight, wait in line and go together in the next call (at most :data:`MAX_BATCH`
messages). So one ack call per consumer is in flight at a time, a batch grows with the
load, and a lone ack costs one turn of the event loop.

Each caller waits for its batch: the ack returns once the adapter's call returned, or
raises that call's error (every message of a failed call goes back to the broker: at
least once, never lost). A caller with nothing to do with the outcome (the Worker,
after its handler returned) queues with :meth:`AckBatcher.send` instead: no future, no
wake-up when the batch is done, and a failed call is logged once for its batch.
:meth:`AckBatcher.drain` lets the subscription send what is queued for a consumer
before closing it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from .._message import Message
from .._outcomes import cancel_all, settle_all
from ..spi import Consumer

__all__ = ["MAX_BATCH", "AckBatcher"]

log = logging.getLogger("polybus.subscription")

MAX_BATCH = 1000
"""Acks per adapter call at most; a longer line goes in several calls, one at a time."""

_Line = list[tuple[Message, asyncio.Future[None] | None]]
"""Queued acks; the future of a caller who waits (:meth:`AckBatcher.ack`), else None."""


class AckBatcher:
    """Queues acks per consumer and sends each consumer's line with
    :meth:`~polybus.spi.Consumer.ack`, one call in flight per consumer."""

    def __init__(self) -> None:
        self._lines: dict[Consumer, _Line] = {}
        self._flushers: dict[Consumer, asyncio.Task[None]] = {}

    def ack(self, consumer: Consumer, msg: Message) -> Awaitable[None]:
        """Queue ``msg`` for ``consumer``; the result resolves when its batch is acked
        (or fails with the batch's error). Cancelling a wait does not recall the ack."""
        done = asyncio.get_running_loop().create_future()
        self._queue(consumer, msg, done)
        return done

    def send(self, consumer: Consumer, msg: Message) -> None:
        """Queue ``msg`` for ``consumer`` without waiting for the outcome; a failed
        batch is logged (its messages go back to the broker)."""
        self._queue(consumer, msg, None)

    def _queue(self, consumer: Consumer, msg: Message, done: asyncio.Future[None] | None) -> None:
        line = self._lines.get(consumer)
        if line is None:
            self._lines[consumer] = [(msg, done)]
        else:
            line.append((msg, done))
        if consumer not in self._flushers:
            task = asyncio.ensure_future(self._flush(consumer))
            self._flushers[consumer] = task

    async def drain(self, consumer: Consumer) -> None:
        """Wait until every ack queued for ``consumer`` was sent (or failed)."""
        task = self._flushers.get(consumer)
        if task is not None:
            await asyncio.gather(asyncio.shield(task), return_exceptions=True)

    async def _flush(self, consumer: Consumer) -> None:
        lines = self._lines
        try:
            while True:
                line = lines.pop(consumer, None)
                if not line:
                    return
                if len(line) > MAX_BATCH:
                    lines[consumer] = line[MAX_BATCH:]  # nothing joined since the pop
                    line = line[:MAX_BATCH]
                try:
                    await consumer.ack([msg for msg, _ in line])
                except asyncio.CancelledError:
                    cancel_all(_waiting(line))
                    raise
                except Exception as exc:
                    unheard = sum(1 for _, done in line if done is None)
                    if unheard:
                        log.warning(
                            "acking %d messages failed, the broker will redeliver them: %s",
                            unheard,
                            exc,
                        )
                    settle_all(_waiting(line), exc)
                else:
                    settle_all(_waiting(line))
        finally:
            del self._flushers[consumer]
            left = lines.pop(consumer, None)
            if left:  # cancelled with a line queued
                cancel_all(_waiting(left))


def _waiting(line: _Line) -> list[asyncio.Future[None]]:
    """The futures of the callers who wait on ``line``."""
    return [done for _, done in line if done is not None]

"""Concurrent single publishes to one topic go to the adapter as one batch.

A publish to a topic with nothing in flight goes at once: an awaited publish never
waits for company. Publishes made while one is in flight to the topic, or later in the
turn of one sent at once (``asyncio.gather`` of many ``Bus.publish`` calls, a Worker's
handlers publishing), are collected per topic and, after one turn, handed to the
adapter as one batch: one produce loop, one wait for confirmations, one timeout,
instead of one of each per call. The first of them leads: it yields once (so that the
turn's other calls can join), then sends alone if nobody joined (no task, no future),
or hands the batch to a task of its own (so that cancelling one caller fails nobody
else). Awaited one after the other, publishes never share a batch, so their order is
untouched; a batch keeps the order of its calls.

Each caller learns its own outcome: confirmed, or the batch's error. When the adapter
names the unconfirmed ids (``PublishError.failed_ids``) only their callers fail, each
with a PublishError naming its id. A size refusal that names no id
(``MessageTooLarge``) is not blamed on the batch: its messages are sent again one by
one, so each caller gets its own answer. Any other error is every caller's: retryable
ones may be published again, non-retryable ones (authorisation, a refused topic)
concern the whole topic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from ._message import Envelope
from ._outcomes import cancel_all, settle_all
from .errors import MessageTooLarge, PublishError

__all__ = ["Coalescer"]

Send = Callable[[str, Sequence[Envelope]], Awaitable[None]]

MAX_MESSAGES = 500
"""A batch that reaches this many messages goes at once; later calls start the next."""
MAX_BYTES = 1 << 20
"""Nor more body bytes than this (brokers limit a request's size, not only a message's)."""


class _Batch:
    __slots__ = ("bytes", "calls", "leader")

    def __init__(self, env: Envelope, size: int) -> None:
        self.calls: list[tuple[Envelope, asyncio.Future[None] | None]] = [(env, None)]
        """The leader's call first (its future made only if the batch is shared)."""
        self.bytes = size
        self.leader: asyncio.Future[None] | None = None


class Coalescer:
    """Collects single publishes per topic for one turn of the event loop, then sends
    each topic's batch with ``send`` (the producer's bounded adapter call)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._open: dict[str, _Batch] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._busy: dict[str, int] = {}
        """Per topic: adapter calls in flight, plus one for the rest of the turn of a
        call sent at once (so that the turn's later calls still join one batch when the
        adapter answered without waiting)."""

    async def publish(self, topic: str, env: Envelope, size: int | None = None) -> None:
        """Publish ``env`` (``size``: its ``Envelope.size``, if known) in this turn's batch for
        ``topic``; return once it is confirmed, raise its error otherwise. Cancelling
        the call does not recall the message (as with any publish already handed to a
        broker)."""
        if size is None:
            size = env.size
        batch = self._open.get(topic)
        if batch is not None:  # join the turn's batch
            done = asyncio.get_running_loop().create_future()
            batch.calls.append((env, done))
            batch.bytes += size
            if len(batch.calls) >= MAX_MESSAGES or batch.bytes >= MAX_BYTES:
                self._dispatch(topic, batch)
            await done
            return
        busy = self._busy
        if topic not in busy:  # nothing in flight: nobody to wait for
            busy[topic] = 1
            asyncio.get_running_loop().call_soon(self._idle, topic)
            await self._send_counted(topic, [env])
            return
        batch = self._open[topic] = _Batch(env, size)
        try:
            await asyncio.sleep(0)  # this turn's other publishes join
        except asyncio.CancelledError:
            if self._open.get(topic) is batch:
                del self._open[topic]
                if len(batch.calls) > 1:
                    self._start(topic, batch.calls[1:])
            raise
        if self._open.get(topic) is batch:
            if len(batch.calls) == 1:
                del self._open[topic]
                await self._send_counted(topic, [env])  # nobody joined
                return
            self._dispatch(topic, batch)
        assert batch.leader is not None  # dispatched, by this call or by a full batch
        await batch.leader

    def _dispatch(self, topic: str, batch: _Batch) -> None:
        del self._open[topic]
        batch.leader = asyncio.get_running_loop().create_future()
        batch.calls[0] = (batch.calls[0][0], batch.leader)
        self._start(topic, batch.calls)

    def _start(self, topic: str, calls: list[tuple[Envelope, asyncio.Future[None] | None]]) -> None:
        task = asyncio.ensure_future(self._run(topic, [(e, d) for e, d in calls if d]))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _send_counted(self, topic: str, envelopes: list[Envelope]) -> None:
        busy = self._busy
        busy[topic] = busy.get(topic, 0) + 1
        try:
            await self._send(topic, envelopes)
        finally:
            self._idle(topic)

    def _idle(self, topic: str) -> None:
        busy = self._busy
        left = busy[topic] - 1
        if left:
            busy[topic] = left
        else:
            del busy[topic]

    async def _run(self, topic: str, calls: list[tuple[Envelope, asyncio.Future[None]]]) -> None:
        try:
            await self._send_counted(topic, [env for env, _ in calls])
        except MessageTooLarge as exc:
            if len(calls) == 1:
                _fail(calls[0][1], exc)
                return
            await asyncio.gather(*(self._run(topic, [call]) for call in calls))
        except PublishError as exc:
            failed = set(exc.failed_ids)
            for env, done in calls:
                if not failed:
                    _fail(done, exc)
                elif env.id in failed:
                    _fail(done, _one(exc, env.id) if len(calls) > 1 else exc)
                elif not done.done():
                    done.set_result(None)
        except asyncio.CancelledError:
            cancel_all(done for _, done in calls)
            raise
        except Exception as exc:
            settle_all((done for _, done in calls), exc)
        else:
            settle_all(done for _, done in calls)


def _fail(done: asyncio.Future[None], exc: BaseException) -> None:
    if not done.done():
        done.set_exception(exc)


def _one(exc: PublishError, msg_id: str) -> PublishError:
    """The error of one caller of a partly failed batch: its own id only."""
    mine = PublishError(str(exc), retryable=exc.retryable, failed_ids=(msg_id,))
    mine.__cause__ = exc
    return mine

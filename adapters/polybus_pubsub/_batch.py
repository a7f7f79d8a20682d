"""Coalescing of concurrent acks into few Acknowledge RPCs (publishes are coalesced by
the core before they reach the adapter).

Calls made by many tasks in the same event-loop turn are sent together: one RPC
carries up to ``max_items`` items and ``max_bytes`` bytes, in the order the calls
were made. Each caller gets a future that completes when the RPC that carried its
items completed (or failed with that RPC's exception). Single-threaded: use it from
the loop that created it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True, eq=False)
class _Call(Generic[T]):
    items: Sequence[T]
    done: asyncio.Future[None]
    chunks: int = 0
    """How many chunks carry this call's items and are not sent yet."""


@dataclass(slots=True)
class _Chunk(Generic[T]):
    items: list[T] = field(default_factory=list)
    calls: list[_Call[T]] = field(default_factory=list)


U = TypeVar("U")


def cut(
    items: Sequence[U],
    max_items: int,
    max_bytes: int | None = None,
    weight: Callable[[U], int] = lambda _item: 0,
) -> list[list[U]]:
    """``items`` in order, cut into requests of at most ``max_items`` items and
    ``max_bytes`` of ``weight`` (an item heavier than that goes alone)."""
    chunks: list[list[U]] = []
    current: list[U] = []
    size = 0
    for item in items:
        heft = weight(item)
        if current and (
            len(current) >= max_items or (max_bytes is not None and size + heft > max_bytes)
        ):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += heft
    if current:
        chunks.append(current)
    return chunks


class Coalescer(Generic[T]):
    """Batches items of concurrent callers; ``send`` performs one RPC for a chunk.

    The chunks of one flush are sent one after the other, in call order, and the
    first failure fails every call not yet sent completely: items (of one key, say)
    never reach the broker out of the order they were submitted in.
    """

    def __init__(
        self,
        send: Callable[[list[T]], Awaitable[None]],
        *,
        max_items: int,
        max_bytes: int | None = None,
        weight: Callable[[T], int] = lambda _item: 0,
    ) -> None:
        self._send = send
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._weight = weight
        self._pending: list[_Call[T]] = []
        self._scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()

    def submit(self, items: Sequence[T]) -> asyncio.Future[None]:
        """Queue ``items``; the returned future completes when they were sent."""
        loop = asyncio.get_running_loop()
        call: _Call[T] = _Call(items, loop.create_future())
        if not items:
            call.done.set_result(None)
            return call.done
        self._pending.append(call)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return call.done

    async def drain(self) -> None:
        """Send everything queued and wait for every RPC in flight."""
        if self._pending:
            self._flush()
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def _flush(self) -> None:
        self._scheduled = False
        calls, self._pending = self._pending, []
        if not calls:
            return
        task = asyncio.get_running_loop().create_task(self._run(self._chunks(calls)))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    def _chunks(self, calls: list[_Call[T]]) -> list[_Chunk[T]]:
        pairs = [(call, item) for call in calls for item in call.items]
        chunks: list[_Chunk[T]] = []
        for part in cut(pairs, self._max_items, self._max_bytes, lambda p: self._weight(p[1])):
            chunk: _Chunk[T] = _Chunk(items=[item for _, item in part])
            for call, _ in part:
                if not chunk.calls or chunk.calls[-1] is not call:
                    chunk.calls.append(call)
                    call.chunks += 1
            chunks.append(chunk)
        return chunks

    async def _run(self, chunks: list[_Chunk[T]]) -> None:
        for index, chunk in enumerate(chunks):
            try:
                await self._send(chunk.items)
            except BaseException as exc:
                # this chunk and everything after it is unsent: fail those callers
                for later in chunks[index:]:
                    for call in later.calls:
                        if not call.done.done():
                            call.done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            for call in chunk.calls:
                call.chunks -= 1
                if call.chunks == 0 and not call.done.done():
                    call.done.set_result(None)

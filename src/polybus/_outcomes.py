"""Handing one outcome to the callers who wait on a shared call (the publish coalescer
and the ack batcher): each caller waits on a future of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

__all__ = ["cancel_all", "settle_all"]


def settle_all(waiting: Iterable[asyncio.Future[None]], error: BaseException | None = None) -> None:
    """Resolve every future not done yet: with ``error``, or as a success."""
    for done in waiting:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def cancel_all(waiting: Iterable[asyncio.Future[None]]) -> None:
    for done in waiting:
        done.cancel()

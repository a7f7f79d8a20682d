"""Waiting for messages with deadlines instead of sleeps.

Every helper here fails with a message that names what was expected and how much
arrived, so a red test says what went missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection

import pytest

from polybus import Message, Subscription


async def collect(
    sub: Subscription, n: int, *, idle_timeout: float, ack: bool = True
) -> list[Message]:
    """Receive exactly ``n`` messages (acking each unless ``ack`` is False).

    Fails when no message arrives for ``idle_timeout`` seconds, naming how many came.
    Duplicates count: use :func:`collect_ids` where redeliveries are tolerated.
    """
    out: list[Message] = []
    while len(out) < n:
        msg = await _next(sub, idle_timeout, f"{len(out)} of {n} messages arrived")
        out.append(msg)
        if ack:
            await msg.ack()
    return out


async def collect_ids(
    sub: Subscription,
    expected: Collection[str],
    *,
    idle_timeout: float,
    on_message: Callable[[Message], Awaitable[None]] | None = None,
) -> list[Message]:
    """Receive until every id in ``expected`` has arrived; return every delivery.

    Each message is passed to ``on_message`` (which settles it) or acked. Duplicates
    are kept in the result (at-least-once tolerates them; callers assert on them).
    Fails on an id that was never published, or when none arrives for ``idle_timeout``.
    """
    wanted = set(expected)
    seen: set[str] = set()
    out: list[Message] = []
    while not wanted <= seen:
        lacking = len(wanted - seen)
        msg = await _next(
            sub, idle_timeout, f"{len(wanted) - lacking} of {len(wanted)} distinct ids arrived"
        )
        if msg.id not in wanted:
            pytest.fail(f"{sub.topic}/{sub.group}: received unexpected message id {msg.id}")
        out.append(msg)
        seen.add(msg.id)
        if on_message is None:
            await msg.ack()
        else:
            await on_message(msg)
    return out


async def expect_nothing(sub: Subscription, quiet: float, *, why: str) -> None:
    """Fail if any message arrives within ``quiet`` seconds (the subject here is absence,
    so watching a fixed window is the test itself, not a readiness wait)."""
    try:
        msg = await sub.get(timeout=quiet)
    except TimeoutError:
        return
    pytest.fail(
        f"{sub.topic}/{sub.group}: message {msg.id} (attempt {msg.delivery_attempt}) "
        f"arrived but {why}"
    )


async def next_message(sub: Subscription, idle_timeout: float, what: str) -> Message:
    """The next message, or a failure naming ``what`` was awaited."""
    return await _next(sub, idle_timeout, what)


async def _next(sub: Subscription, idle_timeout: float, progress: str) -> Message:
    started = time.monotonic()
    try:
        return await sub.get(timeout=idle_timeout)
    except TimeoutError:
        waited = time.monotonic() - started
        pytest.fail(
            f"{sub.topic}/{sub.group}: nothing arrived for {waited:.1f}s "
            f"(idle timeout {idle_timeout}s); {progress}"
        )


async def wait_for(
    condition: Callable[[], bool], *, within: float, what: str, interval: float = 0.02
) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


async def consume_concurrently(
    subs: list[Subscription],
    on_message: Callable[[int, Message], Awaitable[None]],
    done: Callable[[], bool],
    *,
    idle_timeout: float,
    progress: Callable[[], str],
) -> None:
    """Consume every subscription in its own task, passing ``(index, message)`` to
    ``on_message`` (which settles it), until ``done()`` is true.

    Fails when ``done()`` stays false and no message arrives for ``idle_timeout``
    seconds, with ``progress()`` in the message. A consumer's error fails the test.
    """
    last = time.monotonic()
    changed = asyncio.Event()

    async def run(index: int, sub: Subscription) -> None:
        nonlocal last
        async for msg in sub:
            last = time.monotonic()
            await on_message(index, msg)
            changed.set()

    tasks = [asyncio.create_task(run(i, s)) for i, s in enumerate(subs)]
    try:
        while not done():
            for task in tasks:
                if task.done():
                    task.result()  # raises the consumer's error
                    pytest.fail(f"a consumer stopped early; {progress()}")
            remaining = idle_timeout - (time.monotonic() - last)
            if remaining <= 0:
                pytest.fail(f"no message for {idle_timeout}s; {progress()}")
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, 0.5))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def eventually(condition: Callable[[], bool], *, within: float) -> bool:
    """Poll ``condition`` for up to ``within`` seconds; return whether it became true."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True

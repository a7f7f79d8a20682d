"""Shared helpers: a Worker running in the background, polling with a deadline."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import polybus
from polybus import Handler, Message, Middleware


def memory_url() -> str:
    """A private memory:// broker for one test."""
    return f"memory://test-{uuid.uuid4().hex[:12]}"


async def until(condition: Callable[[], bool], *, deadline: float = 10.0, what: str = "") -> None:
    """Poll ``condition`` until true; fail the test if ``deadline`` seconds pass."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"condition not met within {deadline}s: {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def running(
    bus: polybus.Bus,
    middleware: Sequence[Middleware],
    handler: Callable[[Message], object],
    *,
    topic: str = "orders",
    group: str = "g",
    max_in_flight: int = 16,
    ordering: str = "none",
) -> AsyncIterator[polybus.Worker]:
    """A Worker serving ``handler`` until the block ends (then stopped and awaited)."""
    worker = polybus.Worker(bus, middleware, handle_signals=False, shutdown_timeout=5.0)
    worker.handler(topic, group=group, max_in_flight=max_in_flight, ordering=ordering)(handler)
    await bus.declare(topic, group, ordering=ordering)
    task = asyncio.ensure_future(worker.run())
    try:
        yield worker
    finally:
        await worker.stop()
        await asyncio.wait_for(task, 10.0)


async def drain_dead_letters(
    bus: polybus.Bus, topic: str = "orders", group: str = "g", idle: float = 0.3
) -> list[Message]:
    """Every dead letter of ``group`` currently on the broker, acked."""
    out: list[Message] = []
    async with bus.dead_letters(topic, group=group) as dead:
        while True:
            try:
                msg = await dead.get(timeout=idle)
            except TimeoutError:
                return out
            out.append(msg)
            await msg.ack()


async def wait_dead_letters(
    bus: polybus.Bus, count: int, topic: str = "orders", group: str = "g", deadline: float = 10.0
) -> list[Message]:
    """Exactly ``count`` dead letters (acked); fails if fewer come within ``deadline``
    or another one follows shortly after."""
    out: list[Message] = []
    async with bus.dead_letters(topic, group=group) as dead:
        while len(out) < count:
            try:
                msg = await dead.get(timeout=deadline)
            except TimeoutError:
                raise AssertionError(f"{len(out)} of {count} dead letters came") from None
            out.append(msg)
            await msg.ack()
        try:
            extra = await dead.get(timeout=0.2)
        except TimeoutError:
            return out
        raise AssertionError(f"an unexpected extra dead letter: {extra.headers}")


class Outcomes:
    """Outermost test middleware: records how each delivery left the chain
    (``ack`` for returned-unsettled, which the Worker then acks, else the settlement)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def count(self, outcome: str) -> int:
        return sum(1 for _, o in self.seen if o == outcome)

    def __call__(self, handler: Handler) -> Handler:
        async def recording(msg: Message) -> None:
            try:
                await handler(msg)
            except Exception:
                self.seen.append((msg.id, msg.settlement or "raised"))
                raise
            self.seen.append((msg.id, msg.settlement or "ack"))

        return recording

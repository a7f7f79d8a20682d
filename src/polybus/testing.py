"""Testing handlers through the real pipeline and middleware, with no sleeps or polling.

::

    from polybus.testing import Harness

    async def test_poison_order_is_dead_lettered():
        async with Harness(make_worker(polybus.connect())) as harness:   # memory://
            ok = await harness.publish("orders", {"id": 1, "quantity": 2})
            bad = await harness.publish("orders", {"id": 7, "quantity": -3})
            await harness.drain()              # every message settled for good
            assert harness.outcome(ok, "fulfilment") == "ack"
            assert harness.outcome(bad, "fulfilment") == "dead_letter"
            (letter,) = await harness.dead_letters("orders", "fulfilment")
            assert letter.headers["polybus-dlq-reason"].startswith("rejected")

A :class:`Harness` runs the worker (opening its bus if needed), remembers every message
published through it, and :meth:`Harness.drain` returns once each of them has been
settled for good (acked or dead-lettered) by every route of its topic, retries and
redeliveries included; what happened on the way is in :attr:`Harness.settlements`.
The same test runs unchanged against a broker: point ``POLYBUS_URL`` at it. For
isolation, build a fresh bus (and worker) per test: a ``memory://`` bus without a name
is private to itself.

For pytest, ``pytest_plugins = ["polybus.testing"]`` in a ``conftest.py`` gives the
``polybus_harness`` fixture: ``async with polybus_harness(worker) as harness: ...``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from ._message import Message, Outgoing
from ._worker import Worker

__all__ = ["Harness", "Settlement", "polybus_harness"]

FINAL = frozenset({"ack", "dead_letter"})

Outcome = Literal["ack", "nack", "dead_letter"]


@dataclass(frozen=True, slots=True)
class Settlement:
    """One settlement of one delivery, as the worker's route made it."""

    route: str
    """``"topic/group"``."""
    message: Message
    outcome: Outcome


class Harness:
    """Runs ``worker`` while a test publishes and inspects; see the module docstring."""

    def __init__(self, worker: Worker, *, timeout: float = 30.0) -> None:
        self.worker = worker
        self.timeout = timeout
        self.settlements: list[Settlement] = []
        self._expected: dict[tuple[str, str], int] = {}
        """(route, id) -> publishes of that id not yet settled for good; below zero when
        a broker delivered and settled a message before its publish call returned"""
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._opened_bus = False

    async def __aenter__(self) -> Harness:
        bus = self.worker.bus
        if not bus.is_open:
            await bus.open()
            self._opened_bus = True
        for route in self.worker._routes:  # groups exist before the first publish
            await bus.declare(route.topic, route.group, ordering=route.ordering)
        self.worker._observers.append(self._observe)
        self._task = asyncio.get_running_loop().create_task(self.worker.run())
        await self.worker.wait_ready()
        if self._task.done():
            self._task.result()  # the worker could not start: say why
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.worker.stop()
        if self._task is not None:
            await self._task
        self.worker._observers.remove(self._observe)
        if self._opened_bus:
            await self.worker.bus.close()

    # -- publishing ----------------------------------------------------------------

    def _routes_of(self, topic: str) -> list[str]:
        return [r.name for r in self.worker._routes if r.topic == topic]

    def _expect(self, topic: str, ids: Iterable[str]) -> None:
        for msg_id in ids:
            for route in self._routes_of(topic):
                key = (route, msg_id)
                self._expected[key] = self._expected.get(key, 0) + 1

    async def publish(self, topic: str, body: object, **options: Any) -> str:
        """:meth:`polybus.Bus.publish`, remembered until settled; returns the id."""
        msg_id = await self.worker.bus.publish(topic, body, **options)
        self._expect(topic, [msg_id])
        return msg_id

    async def publish_many(self, topic: str, messages: Iterable[Outgoing | object]) -> list[str]:
        """:meth:`polybus.Bus.publish_many`, remembered until settled."""
        ids = await self.worker.bus.publish_many(topic, messages)
        self._expect(topic, ids)
        return ids

    async def replay(self, topic: str, group: str) -> int:
        """Replay ``group``'s dead letters (to that group only); their redelivery is
        then awaited by :meth:`drain` like a publish."""
        bus = self.worker.bus
        count = 0
        for msg_id in [m.id for m in await self.dead_letters(topic, group)]:
            key = (f"{topic}/{group}", msg_id)
            # expected before it is replayed: its redelivery may settle at once
            self._expected[key] = self._expected.get(key, 0) + 1
            if await bus.replay_dead_letters(topic, group=group, ids=[msg_id], idle_timeout=0.2):
                count += 1
            else:
                self._expected[key] -= 1
        return count

    # -- waiting and looking ---------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once every message published (or replayed) through the harness is
        settled for good by every route of its topic; :class:`TimeoutError` naming the
        ones still open after ``timeout`` seconds (default: the harness's)."""
        try:
            async with asyncio.timeout(self.timeout if timeout is None else timeout):
                while self._pending():
                    if self._task is not None and self._task.done():
                        self._task.result()  # the worker ended: raise its error
                        raise RuntimeError("the worker stopped before every message settled")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            open_ = sorted(f"{route} {msg_id}" for route, msg_id in self._pending())
            raise TimeoutError(f"not settled for good: {', '.join(open_[:10])}") from None

    def _pending(self) -> list[tuple[str, str]]:
        return [key for key, left in self._expected.items() if left > 0]

    def _observe(self, route: str, msg: Message, settlement: str) -> None:
        if settlement == "skipped":
            return  # a replay addressed to another group: not this route's business
        self.settlements.append(Settlement(route, msg, settlement))  # type: ignore[arg-type]
        if settlement in FINAL:
            # counted even before the id is expected: on a broker the consumer can settle
            # a message before the publish call that sent it has returned
            key = (route, msg.id)
            self._expected[key] = self._expected.get(key, 0) - 1
        self._changed.set()

    def outcome(self, msg_id: str, group: str | None = None) -> Outcome | None:
        """The last settlement of ``msg_id`` (in ``group``, if given), or None."""
        for s in reversed(self.settlements):
            if s.message.id == msg_id and (group is None or s.route.endswith(f"/{group}")):
                return s.outcome
        return None

    def attempts(self, msg_id: str, group: str | None = None) -> int:
        """How many deliveries of ``msg_id`` were settled (in ``group``, if given); a
        retry the retry middleware waits out in process is the same delivery."""
        return sum(
            1
            for s in self.settlements
            if s.message.id == msg_id and (group is None or s.route.endswith(f"/{group}"))
        )

    def by_outcome(self, outcome: Outcome, group: str | None = None) -> list[Message]:
        """The messages settled with ``outcome`` (``ack``, ``nack``, ``dead_letter``)."""
        return [
            s.message
            for s in self.settlements
            if s.outcome == outcome and (group is None or s.route.endswith(f"/{group}"))
        ]

    async def dead_letters(self, topic: str, group: str) -> list[Message]:
        """The dead-letter copies of ``group`` waiting now, with their ``polybus-dlq-*``
        headers (read, and left in place: they go back when the reading ends)."""
        out: list[Message] = []
        async with self.worker.bus.dead_letters(topic, group=group, max_in_flight=1000) as dead:
            while True:
                try:
                    msg = await dead.get(timeout=0.2)
                except TimeoutError:
                    return out
                out.append(msg)  # unsettled until the subscription closes


@asynccontextmanager
async def _harness(worker: Worker, timeout: float = 30.0) -> AsyncIterator[Harness]:  # noqa: ASYNC109
    async with Harness(worker, timeout=timeout) as harness:
        yield harness


def _fixture() -> Any:
    import pytest

    @pytest.fixture
    def polybus_harness() -> Callable[..., Any]:
        """``async with polybus_harness(worker) as harness:`` a :class:`Harness`."""
        return _harness

    return polybus_harness


try:  # a pytest plugin when loaded as one (pytest_plugins = ["polybus.testing"])
    polybus_harness = _fixture()
except ImportError:  # pytest is not installed: the Harness works without it
    polybus_harness = None

"""Acks reach each consumer in batches, one call in flight at a time (_pipeline.acks)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

import polybus
from polybus._pipeline.acks import MAX_BATCH, AckBatcher
from polybus.errors import BrokerUnavailable
from polybus.spi import Consumer, Message

from .helpers import WAIT, name


class Recording(Consumer):
    """A consumer whose ack records each call; ``hold`` keeps a call in flight."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.in_flight = 0
        self.peak = 0
        self.hold: asyncio.Event | None = None
        self.fail: BaseException | None = None
        self.called = asyncio.Event()

    async def receive(self, max_messages: int) -> Sequence[Message]:
        raise NotImplementedError

    async def ack(self, messages: Sequence[Message]) -> None:
        self.calls.append([m.id for m in messages])
        self.called.set()
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.hold is not None:
                await self.hold.wait()
            await asyncio.sleep(0)
            if self.fail is not None:
                raise self.fail
        finally:
            self.in_flight -= 1

    async def nack(self, message: Message, delay: float | None) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


def messages(count: int) -> list[Message]:
    return [Message(id=f"m{i}", topic="t", body=b"") for i in range(count)]


async def test_the_acks_of_one_turn_go_in_one_call() -> None:
    consumer, batcher = Recording(), AckBatcher()
    batch = messages(50)
    await asyncio.gather(*(batcher.ack(consumer, m) for m in batch))
    assert consumer.calls == [[m.id for m in batch]]


async def test_acks_made_during_a_call_go_together_in_the_next_one() -> None:
    consumer, batcher = Recording(), AckBatcher()
    consumer.hold = asyncio.Event()
    first, *rest = messages(30)
    waiting = [asyncio.ensure_future(batcher.ack(consumer, first))]
    async with asyncio.timeout(WAIT):
        await consumer.called.wait()
    for msg in rest:  # one by one, each in a turn of its own, while the first is held
        waiting.append(asyncio.ensure_future(batcher.ack(consumer, msg)))
        await asyncio.sleep(0)
    assert consumer.calls == [["m0"]]
    consumer.hold.set()
    await asyncio.gather(*waiting)
    assert consumer.calls == [["m0"], [m.id for m in rest]]
    assert consumer.peak == 1


async def test_a_failed_call_fails_its_callers_and_nobody_else() -> None:
    consumer, batcher = Recording(), AckBatcher()
    first, second = messages(20)[:10], messages(20)[10:]
    consumer.fail = BrokerUnavailable("gone")
    failed = await asyncio.gather(
        *(batcher.ack(consumer, m) for m in first), return_exceptions=True
    )
    assert all(isinstance(r, BrokerUnavailable) for r in failed)
    consumer.fail = None
    await asyncio.gather(*(batcher.ack(consumer, m) for m in second))
    assert consumer.calls == [[m.id for m in first], [m.id for m in second]]


async def test_an_unawaited_ack_shares_the_batch_and_a_failure_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``send`` queues without a future: it joins the same call as awaited acks, those
    callers still get the call's error, and the unawaited ones are logged once, counted."""
    consumer, batcher = Recording(), AckBatcher()
    consumer.fail = BrokerUnavailable("gone")
    batch = messages(6)
    for msg in batch[:4]:
        assert batcher.send(consumer, msg) is None  # type: ignore[func-returns-value]
    waited = [batcher.ack(consumer, m) for m in batch[4:]]
    with caplog.at_level("WARNING", logger="polybus.subscription"):
        failed = await asyncio.gather(*waited, return_exceptions=True)
        await batcher.drain(consumer)
    assert consumer.calls == [[m.id for m in batch]]
    assert all(isinstance(r, BrokerUnavailable) for r in failed)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["acking 4 messages failed, the broker will redeliver them: gone"]


async def test_a_long_line_goes_in_calls_of_at_most_max_batch() -> None:
    consumer, batcher = Recording(), AckBatcher()
    batch = messages(2 * MAX_BATCH + 5)
    await asyncio.gather(*(batcher.ack(consumer, m) for m in batch))
    assert [len(c) for c in consumer.calls] == [MAX_BATCH, MAX_BATCH, 5]
    assert [i for c in consumer.calls for i in c] == [m.id for m in batch]


async def test_drain_returns_once_the_queued_acks_were_sent() -> None:
    """Awaited and unawaited (``send``) acks alike: drain waits until they are sent."""
    consumer, batcher = Recording(), AckBatcher()
    consumer.hold = asyncio.Event()
    batch = messages(5)
    pending = [asyncio.ensure_future(batcher.ack(consumer, m)) for m in batch[:3]]
    for msg in batch[3:]:
        batcher.send(consumer, msg)
    await asyncio.sleep(0)
    drained = asyncio.ensure_future(batcher.drain(consumer))
    await asyncio.sleep(0.01)
    assert not drained.done()
    consumer.hold.set()
    async with asyncio.timeout(WAIT):
        await drained
    assert all(p.done() for p in pending)
    assert [i for c in consumer.calls for i in c] == [m.id for m in batch]
    await batcher.drain(Recording())  # nothing queued: returns at once


async def test_a_worker_acks_in_batches_and_each_message_once(
    bus: polybus.Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On memory://: a Worker's handlers ack one by one, the adapter sees far fewer
    calls than messages, and nothing comes back."""
    calls: list[int] = []
    make = bus.adapter.consumer

    def counting(*args: object, **kwargs: object) -> Consumer:
        consumer = make(*args, **kwargs)  # type: ignore[arg-type]
        ack = consumer.ack

        async def counted(batch: Sequence[Message]) -> None:
            calls.append(len(batch))
            await ack(batch)

        consumer.ack = counted  # type: ignore[method-assign,assignment]
        return consumer

    monkeypatch.setattr(bus.adapter, "consumer", counting)
    topic, total = name(), 2000
    seen: list[str] = []
    done = asyncio.Event()
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group="g", max_in_flight=256)
    async def handle(msg: polybus.Message) -> None:
        seen.append(msg.id)
        if len(seen) == total:
            done.set()

    await bus.declare(topic, "g")
    ids = await bus.publish_many(topic, [str(i) for i in range(total)])
    task = asyncio.create_task(worker.run())
    async with asyncio.timeout(WAIT):
        await done.wait()
    await worker.stop()
    await task
    assert sorted(seen) == sorted(ids)
    assert sum(calls) == total
    assert len(calls) <= total // 10
    async with bus.subscribe(topic, group="g") as sub:
        with pytest.raises(TimeoutError):
            await sub.get(timeout=0.2)  # every ack reached the broker


async def test_a_worker_whose_ack_fails_logs_it_and_the_message_comes_back(
    bus: polybus.Bus, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The Worker does not wait for its acks: a failed ack call is logged (by the time
    the Worker has stopped) and the message is not lost: it is delivered again."""
    make = bus.adapter.consumer
    refused = asyncio.Event()

    def failing(*args: object, **kwargs: object) -> Consumer:
        consumer = make(*args, **kwargs)  # type: ignore[arg-type]

        async def refuse(batch: Sequence[Message]) -> None:
            refused.set()
            raise BrokerUnavailable("ack refused")

        consumer.ack = refuse  # type: ignore[method-assign,assignment]
        return consumer

    monkeypatch.setattr(bus.adapter, "consumer", failing)
    topic = name()
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group="g")
    async def handle(msg: polybus.Message) -> None:
        pass

    await bus.declare(topic, "g")
    await bus.publish(topic, "once")
    task = asyncio.create_task(worker.run())
    with caplog.at_level("WARNING", logger="polybus.subscription"):
        async with asyncio.timeout(WAIT):
            await refused.wait()
        await worker.stop()
        await task  # the worker is not ended by a failed ack
    assert [r.getMessage() for r in caplog.records if "acking" in r.getMessage()] == [
        "acking 1 messages failed, the broker will redeliver them: ack refused"
    ]
    monkeypatch.setattr(bus.adapter, "consumer", make)
    async with bus.subscribe(topic, group="g") as sub:
        again = await sub.get(timeout=WAIT)
        assert (again.body, again.delivery_attempt) == (b"once", 2)
        await again.ack()

"""Concurrent single publishes share one adapter call (polybus._coalesce): a publish
with nothing in flight to its topic goes at once; the calls after it in its turn, or
made while a call is in flight, go together."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

import polybus
from polybus._coalesce import MAX_MESSAGES, Coalescer
from polybus._message import Envelope, make_envelope, new_id, now
from polybus.errors import BrokerUnavailable, MessageTooLarge, PublishError


def envelope(body: bytes = b"x") -> Envelope:
    return make_envelope(new_id(), body, None, {}, "application/octet-stream", now())


class Recorder:
    """A send that records each batch and fails as told (``fail``: every batch, or
    only those holding ``fail_with``); ``hold`` keeps a call in flight until set."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.fail: BaseException | None = None
        self.fail_with: str | None = None
        self.too_large: set[str] = set()
        self.hold: asyncio.Event | None = None

    async def send(self, topic: str, envelopes: Sequence[Envelope]) -> None:
        ids = [e.id for e in envelopes]
        self.batches.append(ids)
        await asyncio.sleep(0.001)
        if self.hold is not None:
            await self.hold.wait()
        big = [i for i in ids if i in self.too_large]
        if big:
            raise MessageTooLarge("too large", size=10, limit=5)
        if self.fail is not None and (self.fail_with is None or self.fail_with in ids):
            raise self.fail


async def in_flight(rec: Recorder, coalescer: Coalescer) -> asyncio.Future[None]:
    """A publish held in flight to topic ``t`` (set ``rec.hold`` to let it finish)."""
    rec.hold = asyncio.Event()
    call = asyncio.ensure_future(coalescer.publish("t", envelope()))
    await asyncio.sleep(0)  # sent at once: nothing was in flight
    assert len(rec.batches) == 1
    return call


async def test_the_first_goes_at_once_and_the_rest_of_its_turn_as_one_batch() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.send)
    envs = [envelope() for _ in range(20)]
    await asyncio.gather(*(coalescer.publish("t", e) for e in envs))
    assert rec.batches == [[envs[0].id], [e.id for e in envs[1:]]]


async def test_publishes_made_while_one_is_in_flight_go_as_one_batch_in_call_order() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.send)
    opener = await in_flight(rec, coalescer)
    envs = [envelope() for _ in range(20)]
    calls = asyncio.gather(*(coalescer.publish("t", e) for e in envs))
    await asyncio.sleep(0.01)
    assert rec.hold is not None
    rec.hold.set()
    await calls
    await opener
    assert rec.batches[1:] == [[e.id for e in envs]]


async def test_a_publish_answered_at_once_still_batches_the_rest_of_its_turn() -> None:
    batches: list[int] = []

    async def instant(topic: str, envelopes: Sequence[Envelope]) -> None:
        batches.append(len(envelopes))  # confirmed without waiting (memory://)

    coalescer = Coalescer(instant)
    await asyncio.gather(*(coalescer.publish("t", envelope()) for _ in range(30)))
    assert batches == [1, 29]


async def test_awaited_publishes_never_share_a_batch() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.send)
    envs = [envelope() for _ in range(3)]
    for e in envs:
        await coalescer.publish("t", e)
    assert rec.batches == [[e.id] for e in envs]


async def test_topics_are_batched_apart() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.send)
    a, b = envelope(), envelope()
    await asyncio.gather(coalescer.publish("a", a), coalescer.publish("b", b))
    assert sorted(rec.batches) == sorted([[a.id], [b.id]])


async def test_a_full_batch_goes_at_once_and_the_rest_follows() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.send)
    envs = [envelope() for _ in range(MAX_MESSAGES + 8)]
    await asyncio.gather(*(coalescer.publish("t", e) for e in envs))
    assert [len(b) for b in rec.batches] == [1, MAX_MESSAGES, 7]
    assert [i for b in rec.batches for i in b] == [e.id for e in envs]


async def test_only_the_callers_of_unconfirmed_ids_fail() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.send)
    envs = [envelope() for _ in range(5)]
    rec.fail = PublishError("broker said no", retryable=True, failed_ids=(envs[3].id,))
    rec.fail_with = envs[3].id  # the batch of envs[1:] fails, naming envs[3] only
    results = await asyncio.gather(
        *(coalescer.publish("t", e) for e in envs), return_exceptions=True
    )
    assert [r is None for r in results] == [True, True, True, False, True]
    failed = results[3]
    assert isinstance(failed, PublishError)
    assert failed.failed_ids == (envs[3].id,)
    assert failed.retryable


async def test_an_error_naming_no_id_is_every_callers() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.send)
    rec.fail = BrokerUnavailable("down")
    results = await asyncio.gather(
        *(coalescer.publish("t", envelope()) for _ in range(4)), return_exceptions=True
    )
    assert all(isinstance(r, BrokerUnavailable) for r in results)
    assert [len(b) for b in rec.batches] == [1, 3]


async def test_a_size_refusal_is_not_blamed_on_the_rest_of_the_batch() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.send)
    envs = [envelope() for _ in range(5)]
    rec.too_large = {envs[2].id}
    results = await asyncio.gather(
        *(coalescer.publish("t", e) for e in envs), return_exceptions=True
    )
    assert [r is None for r in results] == [True, True, False, True, True]
    assert isinstance(results[2], MessageTooLarge)
    # the first at once, the batch of the others, then each of them alone
    assert rec.batches[:2] == [[envs[0].id], [e.id for e in envs[1:]]]
    assert sorted(rec.batches[2:]) == sorted([e.id] for e in envs[1:])


async def test_cancelling_the_leading_call_fails_nobody_else() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.send)
    opener = await in_flight(rec, coalescer)
    lead, others = envelope(), [envelope() for _ in range(3)]
    leader = asyncio.ensure_future(coalescer.publish("t", lead))
    followers = [asyncio.ensure_future(coalescer.publish("t", e)) for e in others]
    await asyncio.sleep(0)  # the leader opened the batch and yields; the followers joined
    assert len(rec.batches) == 1
    leader.cancel()  # in its yield: before the batch was sent
    assert rec.hold is not None
    rec.hold.set()
    await asyncio.gather(*followers, opener)  # they are confirmed
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert rec.batches[1:] == [[e.id for e in others]]


async def test_cancelling_a_joined_call_fails_nobody_else() -> None:
    rec = Recorder()
    coalescer = Coalescer(rec.send)
    opener = await in_flight(rec, coalescer)
    envs = [envelope() for _ in range(3)]
    calls = [asyncio.ensure_future(coalescer.publish("t", e)) for e in envs]
    await asyncio.sleep(0)
    calls[1].cancel()
    assert rec.hold is not None
    rec.hold.set()
    results = await asyncio.gather(*calls, opener, return_exceptions=True)
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], asyncio.CancelledError)
    assert rec.batches[1:] == [[e.id for e in envs]]  # it was on its way already


async def test_concurrent_publishes_on_a_bus_share_adapter_calls_and_all_arrive() -> None:
    async with polybus.connect("memory://coalesce") as bus:
        sub = await bus.subscribe("orders", group="g", max_in_flight=500).open()
        calls: list[int] = []
        publish = bus.adapter.publish

        async def counting(topic: str, envelopes: Sequence[Envelope]) -> None:
            calls.append(len(envelopes))
            await publish(topic, envelopes)

        bus.adapter.publish = counting  # type: ignore[method-assign]
        ids = await asyncio.gather(*(bus.publish("orders", f"o{i}") for i in range(300)))
        assert calls == [1, 299]
        got = set()
        while len(got) < len(ids):
            msg = await sub.get(timeout=5)
            got.add(msg.id)
            await msg.ack()
        assert got == set(ids)
        await sub.close()

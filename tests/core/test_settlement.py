"""Settlement: ack, nack, nack with delay, dead letters, settling twice, closing."""

from __future__ import annotations

import asyncio
import time

import pytest

import polybus
from polybus import headers as h
from polybus.errors import SettlementError

from .helpers import QUIET, WAIT, name


async def test_nack_redelivers_with_attempt_two(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        sent = await bus.publish(topic, b"again", key="k", headers={"tenant": "acme"})
        first = await sub.get(timeout=WAIT)
        assert first.delivery_attempt == 1
        await first.nack()
        second = await sub.get(timeout=WAIT)
        await second.ack()
    assert (second.id, second.body, second.key) == (sent, b"again", "k")
    assert second.headers == {"tenant": "acme"}
    assert second.delivery_attempt == 2


async def test_nacked_message_keeps_its_place_before_later_messages_of_its_key(
    bus: polybus.Bus,
) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g", max_in_flight=10, ordering="key") as sub:
        await bus.publish_many(topic, [polybus.Outgoing(str(i), key="k") for i in range(3)])
        first = await sub.get(timeout=WAIT)
        await first.nack()
        order = []
        for _ in range(3):
            msg = await sub.get(timeout=WAIT)
            order.append((msg.text(), msg.delivery_attempt))
            await msg.ack()
    assert order == [("0", 2), ("1", 1), ("2", 1)]


async def test_nack_with_delay_is_not_redelivered_before_the_delay(bus: polybus.Bus) -> None:
    topic, delay = name(), 0.4
    async with bus.subscribe(topic, group="g") as sub:
        await bus.publish(topic, b"later")
        msg = await sub.get(timeout=WAIT)
        nacked_at = time.monotonic()
        await msg.nack(delay=delay)
        again = await sub.get(timeout=WAIT + delay)
        waited = time.monotonic() - nacked_at
        await again.ack()
    assert again.id == msg.id
    assert again.delivery_attempt == 2
    assert waited >= delay  # a lower bound is the contract, not a speed


async def test_delayed_message_does_not_block_other_messages(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        await bus.publish(topic, b"slow", key="a")
        slow = await sub.get(timeout=WAIT)
        await slow.nack(delay=30)
        await bus.publish(topic, b"other", key="b")
        other = await sub.get(timeout=WAIT)
        await other.ack()
    assert other.body == b"other"


async def test_negative_delay_raises_when_awaited(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        await bus.publish(topic, b"x")
        msg = await sub.get(timeout=WAIT)
        with pytest.raises(ValueError, match="delay"):
            await msg.nack(delay=-1)
        assert not msg.settled
        await msg.ack()


async def test_settling_twice_raises(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        await bus.publish(topic, b"once")
        msg = await sub.get(timeout=WAIT)
        await msg.ack()
        for settle in (msg.ack, msg.nack, lambda: msg.dead_letter("late")):
            with pytest.raises(SettlementError, match="already settled"):
                await settle()
    assert msg.settlement == "ack"


async def test_settling_an_undelivered_message_raises() -> None:
    msg = polybus.Message(id="m1", topic="t", body=b"")
    with pytest.raises(SettlementError, match="not delivered"):
        await msg.ack()


async def test_closing_gives_unsettled_messages_back(bus: polybus.Bus) -> None:
    topic = name()
    sub = await bus.subscribe(topic, group="g", max_in_flight=5).open()
    ids = await bus.publish_many(topic, [b"1", b"2", b"3"])
    held = [await sub.get(timeout=WAIT) for _ in range(3)]
    await sub.close()
    with pytest.raises(SettlementError, match="closed"):
        await held[0].ack()
    async with bus.subscribe(topic, group="g") as again:
        back = [await again.get(timeout=WAIT) for _ in range(3)]
        for msg in back:
            await msg.ack()
    assert sorted(m.id for m in back) == sorted(ids)
    assert {m.delivery_attempt for m in back} == {2}


async def test_max_in_flight_is_never_exceeded(bus: polybus.Bus) -> None:
    topic, limit = name(), 3
    async with bus.subscribe(topic, group="g", max_in_flight=limit) as sub:
        await bus.publish_many(topic, [str(i) for i in range(10)])
        held = [await sub.get(timeout=WAIT) for _ in range(limit)]
        assert sub.unsettled == limit
        with pytest.raises(TimeoutError):  # full: no fourth message is handed out
            await sub.get(timeout=QUIET)
        assert sub.unsettled == limit
        await held.pop(0).ack()
        held.append(await sub.get(timeout=WAIT))  # one slot freed, one more comes
        assert sub.unsettled == limit
        seen = len(held) + 1
        while seen < 10:
            for msg in held:
                await msg.ack()
            held = [await sub.get(timeout=WAIT) for _ in range(min(limit, 10 - seen))]
            assert sub.unsettled <= limit
            seen += len(held)
        for msg in held:
            await msg.ack()
        assert sub.unsettled == 0


async def test_at_most_once_settles_before_handing_out(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g", delivery="at_most_once") as sub:
        await bus.publish(topic, b"fire and forget")
        msg = await sub.get(timeout=WAIT)
        assert msg.settlement == "ack"
        assert sub.unsettled == 0
    async with bus.subscribe(topic, group="g") as again:  # closing did not give it back
        with pytest.raises(TimeoutError):
            await again.get(timeout=QUIET)


async def test_dead_letter_keeps_the_message_and_adds_metadata(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        sent = await bus.publish(topic, b"\x00poison", key="p", headers={"tenant": "acme"})
        msg = await sub.get(timeout=WAIT)
        try:
            raise ValueError("cannot parse order")
        except ValueError as exc:
            await msg.dead_letter("bad order", error=exc)
        with pytest.raises(TimeoutError):  # settled: not redelivered to the group
            await sub.get(timeout=QUIET)
    async with bus.dead_letters(topic, group="g") as dead:
        copy = await dead.get(timeout=WAIT)
        await copy.ack()
    assert (copy.id, copy.key, copy.body) == (sent, "p", b"\x00poison")
    assert copy.headers["tenant"] == "acme"
    assert copy.headers[h.DLQ_REASON] == "bad order"
    assert copy.headers[h.DLQ_ERROR_TYPE] == "builtins.ValueError"
    assert copy.headers[h.DLQ_ERROR_MESSAGE] == "cannot parse order"
    assert copy.headers[h.DLQ_ORIGINAL_TOPIC] == topic
    assert copy.headers[h.DLQ_ORIGINAL_GROUP] == "g"
    assert copy.headers[h.DLQ_ATTEMPTS] == "1"


async def test_replayed_dead_letter_returns_to_its_topic(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g") as sub:
        sent = await bus.publish(topic, b"retry me", headers={"a": "1"})
        msg = await sub.get(timeout=WAIT)
        await msg.dead_letter("not now")
        replayed = await bus.replay_dead_letters(topic, group="g", idle_timeout=QUIET)
        again = await sub.get(timeout=WAIT)
        await again.ack()
    assert replayed == 1
    assert (again.id, again.body) == (sent, b"retry me")
    assert again.headers == {"a": "1", h.REPLAY: "1", h.REPLAY_GROUP: "g"}


async def test_closing_while_a_get_waits_ends_it_and_loses_nothing(bus: polybus.Bus) -> None:
    topic = name()
    sub = await bus.subscribe(topic, group="g").open()
    waiting = asyncio.create_task(sub.get())
    await asyncio.sleep(0)  # let the get start waiting for a message
    await sub.close()
    sent = await bus.publish(topic, b"after close")
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(WAIT):
            await waiting
    async with bus.subscribe(topic, group="g") as again:
        msg = await again.get(timeout=WAIT)
        await msg.ack()
    assert msg.id == sent


async def test_broker_dead_letters_at_max_deliveries(bus: polybus.Bus) -> None:
    topic = name()
    async with bus.subscribe(topic, group="g", max_deliveries=2) as sub:
        sent = await bus.publish(topic, b"crashes every time")
        for attempt in (1, 2):
            msg = await sub.get(timeout=WAIT)
            assert msg.delivery_attempt == attempt
            await msg.nack()
        with pytest.raises(TimeoutError):  # the third delivery went to the DLQ instead
            await sub.get(timeout=QUIET)
    async with bus.dead_letters(topic, group="g") as dead:
        copy = await dead.get(timeout=WAIT)
        await copy.ack()
    assert copy.id == sent
    assert copy.headers[h.DLQ_ATTEMPTS] == "2"
    assert "delivery limit" in copy.headers[h.DLQ_REASON]


async def test_a_dead_letter_cannot_be_dead_lettered_again(bus: polybus.Bus) -> None:
    topic = name("dlq-twice")
    async with bus.subscribe(topic, group="g") as sub:
        await bus.publish(topic, b"poison")
        msg = await sub.get(timeout=WAIT)
        await msg.dead_letter("bad")
    async with bus.dead_letters(topic, group="g") as dead:
        copy = await dead.get(timeout=WAIT)
        with pytest.raises(SettlementError, match="already a dead letter"):
            await copy.dead_letter("worse")
        assert not copy.settled
        await copy.ack()

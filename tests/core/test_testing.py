"""polybus.testing: a Worker under test through the real middleware, no polling."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import polybus
from polybus import headers as h
from polybus.testing import Harness


def make_worker(bus: polybus.Bus) -> polybus.Worker:
    worker = polybus.Worker(
        bus, polybus.defaults(initial=0.001, max_delay=0.01, max_attempts=3), handle_signals=False
    )
    flaky: dict[int, int] = {}

    @worker.handler("orders", group="fulfilment")
    async def fulfil(order: dict[str, int]) -> None:
        if order["quantity"] <= 0:
            raise polybus.Reject("quantity must be positive")
        if order.get("flaky"):
            flaky[order["id"]] = flaky.get(order["id"], 0) + 1
            if flaky[order["id"]] < 2:
                raise ConnectionError("the warehouse did not answer")

    @worker.handler("orders", group="analytics")
    async def count(order: dict[str, int]) -> None:
        return None

    return worker


async def test_drain_waits_for_every_route_and_retry() -> None:
    async with Harness(make_worker(polybus.connect())) as harness:
        ok = await harness.publish("orders", {"id": 1, "quantity": 2})
        flaky = await harness.publish("orders", {"id": 2, "quantity": 1, "flaky": 1})
        bad = await harness.publish("orders", {"id": 7, "quantity": -3})
        await harness.drain()
        assert harness.outcome(ok, "fulfilment") == "ack"
        assert harness.outcome(flaky, "fulfilment") == "ack"
        assert harness.outcome(bad, "fulfilment") == "dead_letter"
        assert {harness.outcome(i, "analytics") for i in (ok, flaky, bad)} == {"ack"}
        (letter,) = await harness.dead_letters("orders", "fulfilment")
        assert letter.id == bad
        assert letter.headers[h.DLQ_REASON] == "rejected: quantity must be positive"


async def test_a_replay_is_drained_like_a_publish() -> None:
    async with Harness(make_worker(polybus.connect())) as harness:
        bad = await harness.publish("orders", {"id": 7, "quantity": -3})
        await harness.drain()
        assert await harness.replay("orders", "fulfilment") == 1
        await harness.drain()
        assert harness.attempts(bad, "fulfilment") == 2
        assert harness.attempts(bad, "analytics") == 1, "the replay reached fulfilment only"


async def test_a_message_settled_before_its_publish_returned_is_drained() -> None:
    """On a broker the consumer may settle a message before the publish call that sent
    it returns (seen on RabbitMQ); drain must not wait for that settlement again."""
    bus = polybus.connect()
    worker = make_worker(bus)
    settled = asyncio.Event()
    worker._observers.append(lambda route, msg, outcome: settled.set())
    publish = bus.publish

    async def publish_returning_late(topic: str, body: object, **options: Any) -> str:
        msg_id = await publish(topic, body, **options)
        await settled.wait()  # the consumer has settled it: only now does publish return
        return msg_id

    bus.publish = publish_returning_late  # type: ignore[method-assign]
    async with Harness(worker, timeout=5) as harness:
        sent = await harness.publish("orders", {"id": 1, "quantity": 2})
        await harness.drain()
        assert harness.outcome(sent, "fulfilment") == "ack"
        assert harness.outcome(sent, "analytics") == "ack"


async def test_drain_names_what_is_still_open() -> None:
    bus = polybus.connect()
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler("slow", group="g")
    async def forever(msg: polybus.Message) -> None:
        await msg.nack(delay=60)  # comes back in a minute: not settled for good

    async with Harness(worker) as harness:
        sent = await harness.publish("slow", b"x")
        with pytest.raises(TimeoutError, match=sent):
            await harness.drain(timeout=0.3)


async def test_the_pytest_fixture(polybus_harness: object) -> None:
    async with polybus_harness(make_worker(polybus.connect())) as harness:  # type: ignore[operator]
        sent = await harness.publish("orders", {"id": 3, "quantity": 1})
        await harness.drain()
        assert harness.outcome(sent, "fulfilment") == "ack"

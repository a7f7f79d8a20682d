"""Dead-letter routing on memory://: the record, a failing DLQ publish, read and replay."""

from __future__ import annotations

from datetime import datetime

import polybus
from polybus import Message
from polybus import headers as h
from polybus.errors import Reject
from polybus.middleware import DeadLetter, Retry

from .helpers import Outcomes, memory_url, running, until, wait_dead_letters


def fail_deep(order: int) -> None:
    raise Reject(f"order {order} has no lines")


async def test_the_dead_letter_record_keeps_the_message_and_adds_the_facts() -> None:
    body = bytes(range(256))  # not text: must survive byte-exact

    async def handler(msg: Message) -> None:
        fail_deep(7)

    async with (
        polybus.connect(memory_url()) as bus,
        running(bus, [DeadLetter(), Retry()], handler, group="billing"),
    ):
        sent = await bus.publish(
            "orders", body, key="order-7", headers={"tenant": "acme", "traceparent": "00-1"}
        )
        (dead,) = await wait_dead_letters(bus, 1, group="billing")

    assert dead.id == sent
    assert dead.key == "order-7"
    assert dead.body == body
    assert dead.content_type == "application/octet-stream"
    assert dead.headers["tenant"] == "acme"
    assert dead.headers["traceparent"] == "00-1"
    assert dead.headers[h.DLQ_REASON] == "rejected: order 7 has no lines"
    assert dead.headers[h.DLQ_ERROR_TYPE] == "polybus.errors.Reject"
    assert dead.headers[h.DLQ_ERROR_MESSAGE] == "order 7 has no lines"
    trace = dead.headers[h.DLQ_TRACEBACK]
    assert "fail_deep" in trace
    assert len(trace) <= 2000
    assert dead.headers[h.DLQ_ORIGINAL_TOPIC] == "orders"
    assert dead.headers[h.DLQ_ORIGINAL_GROUP] == "billing"
    assert dead.headers[h.DLQ_ATTEMPTS] == "1"
    first = datetime.fromisoformat(dead.headers[h.DLQ_FIRST_FAILURE])
    last = datetime.fromisoformat(dead.headers[h.DLQ_LAST_FAILURE])
    assert first <= last


async def test_a_long_traceback_is_bounded_and_keeps_its_end() -> None:
    # two functions in turn: Python does not fold alternating frames
    def ping(n: int) -> None:
        if n == 0:
            raise Reject("deep")
        pong(n - 1)

    def pong(n: int) -> None:
        ping(n - 1)

    async def handler(msg: Message) -> None:
        ping(60)

    async with polybus.connect(memory_url()) as bus, running(bus, [DeadLetter()], handler):
        await bus.publish("orders", "x")
        (dead,) = await wait_dead_letters(bus, 1)
    trace = dead.headers[h.DLQ_TRACEBACK]
    assert len(trace) <= 2000
    assert trace.startswith("...")
    assert trace.rstrip().endswith("polybus.errors.Reject: deep")


async def test_a_failed_dead_letter_publish_nacks_the_original() -> None:
    # The broker refuses the dead-letter copy: the original fits the 1 KiB limit, the
    # copy with its reason and traceback headers does not (a real MessageTooLarge).
    deliveries: list[int] = []

    async def handler(msg: Message) -> None:
        deliveries.append(msg.delivery_attempt)
        raise Reject("x" * 900)

    async with polybus.connect(memory_url() + "?max_message_size=1024") as bus:
        async with running(bus, [DeadLetter()], handler):
            await bus.publish("orders", b"a" * 64)
            await until(lambda: len(deliveries) >= 3, what="redelivered after failed DLQ")
        async with bus.dead_letters("orders", group="g") as dead:
            try:
                extra = await dead.get(timeout=0.2)
            except TimeoutError:
                extra = None
    assert extra is None
    assert deliveries[:3] == [1, 2, 3]  # nacked, never acked: it kept coming back


async def test_dead_letters_can_be_read_and_replayed() -> None:
    healthy = False
    outcomes = Outcomes()
    processed: list[tuple[str, bytes, str | None, str | None]] = []

    async def handler(msg: Message) -> None:
        if not healthy:
            raise Reject("downstream refused")
        processed.append((msg.id, msg.body, msg.key, msg.headers.get("tenant")))

    async with polybus.connect(memory_url()) as bus:
        async with running(bus, [outcomes, DeadLetter()], handler):
            ids = [
                await bus.publish("orders", f"o{i}", key=f"k{i}", headers={"tenant": "t"})
                for i in range(3)
            ]
            await until(lambda: outcomes.count("dead_letter") == 3, what="3 dead letters")
            healthy = True
            replayed = await bus.replay_dead_letters("orders", group="g", idle_timeout=0.3)
            await until(lambda: len(processed) == 3, what="replayed and processed")
        assert await wait_dead_letters(bus, 0) == []
    assert replayed == 3
    assert sorted(p[0] for p in processed) == sorted(ids)
    assert {(p[1], p[2], p[3]) for p in processed} == {
        (f"o{i}".encode(), f"k{i}", "t") for i in range(3)
    }


async def test_replay_respects_the_limit() -> None:
    outcomes = Outcomes()

    async def handler(msg: Message) -> None:
        raise Reject("no")

    async with polybus.connect(memory_url()) as bus:
        async with running(bus, [outcomes, DeadLetter()], handler):
            for i in range(3):
                await bus.publish("orders", f"o{i}")
            await until(lambda: outcomes.count("dead_letter") == 3, what="3 dead letters")
        assert await bus.replay_dead_letters("orders", group="g", limit=2) == 2
        left = await wait_dead_letters(bus, 1)
    assert left[0].headers[h.DLQ_REASON] == "rejected: no"

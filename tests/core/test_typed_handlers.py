"""Typed handlers: the body decoded before the handler runs; a bad body is permanent."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pydantic
import pytest

import polybus
from polybus import headers as h
from polybus.errors import ConfigError

from .helpers import WAIT, name


@dataclass
class Order:
    id: int
    item: str


class PaidOrder(pydantic.BaseModel):
    id: int
    total: float


async def run_until(worker: polybus.Worker, condition: object, publish: object) -> None:
    running = asyncio.create_task(worker.run())
    try:
        await worker.wait_ready()
        await publish()  # type: ignore[operator]
        async with asyncio.timeout(WAIT):
            while not condition():  # type: ignore[operator]  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    finally:
        await worker.stop()
        await running


async def test_a_dataclass_body_and_the_message(bus: polybus.Bus) -> None:
    topic, got = name(), []
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group="g")
    async def fulfil(order: Order, msg: polybus.Message) -> None:
        got.append((order, msg.key))

    async def publish() -> None:
        await bus.publish(topic, {"id": 7, "item": "keyboard"}, key="c1")

    await run_until(worker, lambda: got, publish)
    assert got == [(Order(7, "keyboard"), "c1")]


async def test_a_pydantic_body_alone_and_a_sync_handler(bus: polybus.Bus) -> None:
    topic, got = name(), []
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group="g")
    def bill(order: PaidOrder) -> None:  # runs in a thread
        got.append(order)

    async def publish() -> None:
        await bus.publish(topic, PaidOrder(id=1, total=9.5))

    await run_until(worker, lambda: got, publish)
    assert got == [PaidOrder(id=1, total=9.5)]


@pytest.mark.parametrize(
    ("annotation", "body", "expected"),
    [(bytes, b"\x00raw", b"\x00raw"), (str, "text", "text"), (dict, {"a": 1}, {"a": 1})],
)
async def test_raw_text_and_json_bodies(
    bus: polybus.Bus, annotation: type, body: object, expected: object
) -> None:
    topic, got = name(), []
    worker = polybus.Worker(bus, handle_signals=False)

    async def handle(value: object) -> None:
        got.append(value)

    handle.__annotations__["value"] = annotation
    worker.handler(topic, group="g")(handle)

    async def publish() -> None:
        await bus.publish(topic, body)

    await run_until(worker, lambda: got, publish)
    assert got == [expected]


@pytest.mark.parametrize("middleware", [False, True], ids=["bare", "defaults"])
async def test_a_body_that_does_not_decode_is_dead_lettered_at_once(
    bus: polybus.Bus, middleware: bool
) -> None:
    topic, calls = name(), []
    chain = polybus.defaults() if middleware else []
    worker = polybus.Worker(bus, chain, handle_signals=False)

    @worker.handler(topic, group="g")
    async def fulfil(order: PaidOrder) -> None:
        calls.append(order)

    async def publish() -> None:
        await bus.publish(topic, {"id": "not a number", "total": 1})

    running = asyncio.create_task(worker.run())
    try:
        await worker.wait_ready()
        await publish()
        async with bus.dead_letters(topic, group="g") as letters:
            letter = await letters.get(timeout=WAIT)
            await letter.ack()
    finally:
        await worker.stop()
        await running
    assert calls == [], "the handler never runs for a bad body"
    assert letter.headers[h.DLQ_ERROR_TYPE] == "polybus.errors.SerializationError"
    assert "PaidOrder" in letter.headers[h.DLQ_ERROR_MESSAGE]
    assert letter.headers[h.DLQ_ATTEMPTS] == "1", "never retried"


def test_an_unusable_signature_fails_at_registration(bus: polybus.Bus) -> None:
    worker = polybus.Worker(bus, handle_signals=False)

    async def three(a: Order, b: polybus.Message, c: int) -> None: ...

    with pytest.raises(ConfigError) as raised:
        worker.handler("t", group="g")(three)
    assert raised.value.field == "handler"

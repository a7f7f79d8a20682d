"""Idempotency strategies on memory:// with the MemoryStore and the SQLiteStore."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import polybus
from polybus import Message, Middleware, Outgoing
from polybus import headers as h
from polybus.errors import ConfigError, Reject
from polybus.middleware import DeadLetter, Idempotency, Sequences, TimeWindow
from polybus.stores import MemoryStore, SQLiteStore, Store

from .helpers import Outcomes, memory_url, running, until, wait_dead_letters


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    made: Store = MemoryStore() if request.param == "memory" else SQLiteStore(tmp_path / "s.db")
    yield made
    await made.close()


def seq(key: str, n: int, body: str = "") -> Outgoing:
    return Outgoing(body or f"{key}@{n}", key=key, headers={h.SEQUENCE: str(n)})


async def test_sequence_strategy_drops_anything_at_or_below_the_stored_value(
    store: Store,
) -> None:
    seen: list[tuple[str, int]] = []
    outcomes = Outcomes()

    async def handler(msg: Message) -> None:
        seen.append((msg.key or "", int(msg.headers[h.SEQUENCE])))

    mw: list[Middleware] = [outcomes, DeadLetter(), Idempotency(store, Sequences())]
    # a sequence per entity is only meaningful when the entity's messages are in order
    async with polybus.connect(memory_url()) as bus, running(bus, mw, handler, ordering="key"):
        batch = [seq("a", 1), seq("a", 2), seq("a", 2), seq("a", 1), seq("b", 1), seq("a", 3)]
        await bus.publish_many("orders", batch)
        await until(lambda: outcomes.count("ack") == 6, what="all six settled")
    assert [s for s in seen if s[0] == "a"] == [("a", 1), ("a", 2), ("a", 3)]
    assert [s for s in seen if s[0] == "b"] == [("b", 1)]


async def test_sequence_strategy_rejects_a_message_without_key_or_sequence(store: Store) -> None:
    async def handler(msg: Message) -> None:
        raise AssertionError("must not run")

    async with (
        polybus.connect(memory_url()) as bus,
        running(bus, [DeadLetter(), Idempotency(store, Sequences())], handler),
    ):
        await bus.publish("orders", "no key", headers={h.SEQUENCE: "1"})
        await bus.publish("orders", "bad", key="a", headers={h.SEQUENCE: "x1"})
        dead = await wait_dead_letters(bus, 2)
    reasons = sorted(d.headers[h.DLQ_REASON] for d in dead)
    assert "needs a key and a 'polybus-sequence' header" in reasons[1]
    assert "is not an integer" in reasons[0]


async def test_window_strategy_collapses_repeats_within_the_window(store: Store) -> None:
    seen: list[str] = []
    outcomes = Outcomes()

    async def handler(msg: Message) -> None:
        seen.append(msg.id)

    window = 1.5  # generous: the three messages take milliseconds even on a busy machine
    mw: list[Middleware] = [outcomes, Idempotency(store, TimeWindow(window))]
    async with polybus.connect(memory_url()) as bus, running(bus, mw, handler):
        first = await bus.publish("orders", {"cmd": "refresh"}, key="acct-1")
        started = time.monotonic()
        await bus.publish("orders", {"cmd": "refresh"}, key="acct-1")  # new id, same content
        await bus.publish("orders", {"cmd": "refresh"}, key="acct-2")  # other entity
        await until(lambda: outcomes.count("ack") == 3, what="three settled")
        assert time.monotonic() - started < window, "too slow to test inside the window"
        assert len(seen) == 2
        # past the window the same content is new work again
        await until(lambda: time.monotonic() > started + window + 0.05, what="window passed")
        again = await bus.publish("orders", {"cmd": "refresh"}, key="acct-1")
        await until(lambda: outcomes.count("ack") == 4, what="fourth settled")
    assert seen[0] == first
    assert seen[-1] == again
    assert len(seen) == 3


async def test_window_by_id_ignores_content(store: Store) -> None:
    seen: list[bytes] = []
    outcomes = Outcomes()

    async def handler(msg: Message) -> None:
        seen.append(msg.body)

    async with (
        polybus.connect(memory_url()) as bus,
        running(bus, [outcomes, Idempotency(store, TimeWindow(60, by="id"))], handler),
    ):
        await bus.publish_many("orders", [Outgoing(b"a", id="same"), Outgoing(b"b", id="same")])
        await bus.publish_many("orders", [b"c", b"c"])
        await until(lambda: outcomes.count("ack") == 4, what="four settled")
    assert sorted(seen) == [b"a", b"c", b"c"]


async def test_a_failed_attempt_does_not_make_its_redelivery_a_duplicate(store: Store) -> None:
    attempts: list[int] = []
    done: list[str] = []

    async def handler(msg: Message) -> None:
        attempts.append(msg.delivery_attempt)
        if msg.delivery_attempt == 1:
            raise ConnectionError("transient")
        done.append(msg.id)

    async with (
        polybus.connect(memory_url()) as bus,
        running(bus, [Idempotency(store)], handler),
    ):
        sent = await bus.publish("orders", "x")
        await until(lambda: done == [sent], what="processed on redelivery")
    assert attempts == [1, 2]


async def test_a_replayed_dead_letter_is_not_swallowed_as_a_duplicate(store: Store) -> None:
    healthy = False
    done: list[str] = []
    outcomes = Outcomes()

    async def handler(msg: Message) -> None:
        if not healthy:
            raise Reject("not yet")
        done.append(msg.id)

    async with (
        polybus.connect(memory_url()) as bus,
        running(bus, [outcomes, DeadLetter(), Idempotency(store)], handler),
    ):
        sent = await bus.publish("orders", "x")
        await until(lambda: outcomes.count("dead_letter") == 1, what="dead-lettered")
        healthy = True
        assert await bus.replay_dead_letters("orders", group="g", idle_timeout=0.2) == 1
        await until(lambda: done == [sent], what="replay processed")


async def test_effectively_once_needs_idempotency_middleware() -> None:
    async with polybus.connect(memory_url()) as bus:
        with pytest.raises(ConfigError) as info:
            polybus.Worker(bus, []).handler("orders", group="g", delivery="effectively_once")
        assert info.value.field == "delivery"
        worker = polybus.Worker(bus, polybus.defaults(idempotency=MemoryStore()))
        worker.handler("orders", group="g", delivery="effectively_once")


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        Idempotency(MemoryStore(), lease=0)
    assert info.value.field == "lease"
    with pytest.raises(ConfigError) as info:
        Idempotency(MemoryStore(), TimeWindow(0))
    assert info.value.field == "strategy"

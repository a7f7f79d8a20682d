"""polybus.defaults(): the recommended chain, in order, and its settings."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

import polybus
from polybus import Message
from polybus import headers as h
from polybus.errors import ConfigError, Reject
from polybus.middleware import (
    CircuitBreaker,
    DeadLetter,
    Idempotency,
    PoisonGuard,
    Retry,
    Sequences,
)
from polybus.stores import SQLiteStore

from .helpers import Outcomes, memory_url, running, until, wait_dead_letters


def test_the_chain_is_in_the_documented_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "seen.db")
    chain = polybus.defaults(idempotency=store)
    assert [type(m) for m in chain] == [PoisonGuard, DeadLetter, CircuitBreaker, Retry, Idempotency]
    guard = chain[0]
    assert isinstance(guard, PoisonGuard)
    assert guard.store is store  # counts in the durable store when the backend cannot
    assert [type(m) for m in polybus.defaults()] == [PoisonGuard, DeadLetter, CircuitBreaker, Retry]


def test_settings_reach_their_middleware() -> None:
    chain = polybus.defaults(
        max_deliveries=4,
        max_attempts=3,
        initial=0.5,
        jitter="equal",
        cooldown=5.0,
        breaker=True,
    )
    guard, _, breaker, retry = chain
    assert isinstance(guard, PoisonGuard)
    assert guard.max_deliveries == 4
    assert isinstance(breaker, CircuitBreaker)
    assert breaker.cooldown == 5.0
    assert isinstance(retry, Retry)
    assert retry.max_attempts == 3
    assert retry.backoff.initial == 0.5
    assert retry.backoff.jitter == "equal"
    assert [type(m) for m in polybus.defaults(breaker=False)] == [PoisonGuard, DeadLetter, Retry]
    idem = polybus.defaults(idempotency=polybus.stores.MemoryStore(), strategy=Sequences())[-1]
    assert isinstance(idem, Idempotency)
    assert isinstance(idem.strategy, Sequences)


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"max_attemps": 3}, "max_attemps"), ({"lease": 5.0}, "idempotency")],
)
def test_bad_settings_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        polybus.defaults(**settings)
    assert info.value.field == field


async def test_the_default_chain_end_to_end(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "seen.db")
    outcomes = Outcomes()
    runs: dict[bytes, int] = {}

    async def handler(msg: Message) -> None:
        runs[msg.body] = runs.get(msg.body, 0) + 1
        if msg.body == b"reject":
            raise Reject("invalid order")
        if msg.body == b"flaky" and runs[msg.body] < 3:
            raise ConnectionError("blip")

    chain = polybus.defaults(idempotency=store, initial=0.001, rng=random.Random(5))
    async with polybus.connect(memory_url()) as bus:
        async with running(bus, [outcomes, *chain], handler):
            await bus.publish("orders", b"ok", id="a")
            await bus.publish("orders", b"ok", id="a")  # duplicate
            await bus.publish("orders", b"flaky")
            await bus.publish("orders", b"reject")
            await until(lambda: len(outcomes.seen) == 4, what="four settled")
        (dead,) = await wait_dead_letters(bus, 1)
    await store.close()
    assert runs == {b"ok": 1, b"flaky": 3, b"reject": 1}
    assert dead.body == b"reject"
    assert dead.headers[h.DLQ_REASON] == "rejected: invalid order"

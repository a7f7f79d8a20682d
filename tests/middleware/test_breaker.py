"""Circuit breaker on memory://: opens on failures, holds messages, probes, resumes."""

from __future__ import annotations

import asyncio

import pytest

import polybus
from polybus import Message, Outgoing
from polybus.errors import ConfigError, Reject
from polybus.middleware import CircuitBreaker, DeadLetter, Idempotency
from polybus.stores import MemoryStore

from .helpers import Outcomes, memory_url, running, until, wait_dead_letters


async def test_the_breaker_pauses_then_probes_and_resumes() -> None:
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        window=4,
        min_calls=4,
        failure_ratio=0.5,
        cooldown=0.2,
        on_change=lambda old, new: changes.append((old, new)),
    )
    healthy = False
    calls: list[str] = []  # the breaker state at each handler run
    done: set[bytes] = set()

    async def handler(msg: Message) -> None:
        calls.append(breaker.state)
        if not healthy:
            raise ConnectionError("database down")
        done.add(msg.body)

    outcomes = Outcomes()
    async with polybus.connect(memory_url()) as bus:
        async with running(bus, [outcomes, DeadLetter(), breaker], handler, max_in_flight=4):
            await bus.publish_many("orders", [f"m{i}".encode() for i in range(12)])
            # a failed probe must re-open it: the outage outlasts the first cooldown
            await until(
                lambda: changes.count(("half_open", "open")) >= 1, what="probe failed, reopened"
            )
            failures_while_down = len(calls)
            healthy = True
            await until(lambda: len(done) == 12, what="all processed after recovery")
        assert await wait_dead_letters(bus, 0) == []  # nothing poured into the DLQ

    assert changes[0] == ("closed", "open")
    assert ("open", "half_open") in changes
    assert changes[-1] == ("half_open", "closed")
    # no message reached the handler while open; one probe per half-open period
    assert "open" not in calls
    assert calls.count("half_open") == changes.count(("open", "half_open"))
    # while open, messages were held, not settled: only failures before opening and
    # probes were nacked (4 to open the breaker, then at most the in-flight stragglers)
    assert failures_while_down <= 4 + 3 + changes.count(("open", "half_open"))
    assert outcomes.count("dead_letter") == 0


async def test_rejections_do_not_open_the_breaker() -> None:
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        window=4, min_calls=2, cooldown=60, on_change=lambda o, n: changes.append((o, n))
    )

    async def handler(msg: Message) -> None:
        raise Reject("bad message, not an outage")

    async with (
        polybus.connect(memory_url()) as bus,
        running(bus, [DeadLetter(), breaker], handler),
    ):
        await bus.publish_many("orders", [b"a", b"b", b"c", b"d", b"e"])
        assert len(await wait_dead_letters(bus, 5)) == 5
    assert changes == []
    assert breaker.state == "closed"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"window": 0}, "window"),
        ({"min_calls": 30}, "min_calls"),
        ({"failure_ratio": 0}, "failure_ratio"),
        ({"cooldown": 0}, "cooldown"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


async def test_twins_deferred_by_idempotency_are_not_failures() -> None:
    changes: list[tuple[str, str]] = []
    breaker = CircuitBreaker(
        window=2, min_calls=2, cooldown=60, on_change=lambda o, n: changes.append((o, n))
    )
    outcomes = Outcomes()

    async def handler(msg: Message) -> None:
        await asyncio.sleep(0.02)  # simulated work, so that the twins overlap

    # a twin is deferred for its holder's remaining lease: keep the lease short
    idem = Idempotency(MemoryStore(), lease=0.5, busy_delay=0.01)
    async with (
        polybus.connect(memory_url()) as bus,
        running(bus, [outcomes, breaker, idem], handler),
    ):
        await bus.publish_many("orders", [Outgoing(b"x", id="same") for _ in range(4)])
        await until(lambda: outcomes.count("ack") == 4, what="all four acked")
    assert outcomes.count("nack") > 0  # twins were deferred
    assert changes == []

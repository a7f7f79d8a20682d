"""Poison-pill guard: broker counts, store counts, and a real SIGKILL crash loop."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import polybus
from polybus import Message
from polybus import headers as h
from polybus.errors import ConfigError
from polybus.middleware import PoisonGuard
from polybus.stores import MemoryStore

from .helpers import memory_url, running, until, wait_dead_letters

CHILD = Path(__file__).with_name("crash_child.py")


async def consume_through(
    bus: polybus.Bus, guard: PoisonGuard, runs: list[int], deliveries: int
) -> None:
    """Feed ``deliveries`` deliveries through the guard by hand, nacking failures.
    (A Worker would also hand max_deliveries to the broker, whose native limit would
    fire first on memory://: here the guard alone decides.)"""

    async def failing(msg: Message) -> None:
        runs.append(msg.delivery_attempt)
        raise RuntimeError("crashes every time")

    handler = polybus.chain(failing, [guard])
    async with bus.subscribe("orders", group="g") as sub:
        for _ in range(deliveries):
            msg = await sub.get(timeout=5)
            try:
                await handler(msg)
            except RuntimeError:
                await msg.nack()


@pytest.mark.parametrize("counting", ["broker", "store"])
async def test_past_the_limit_the_handler_does_not_run(counting: str) -> None:
    guard = PoisonGuard(2, store=MemoryStore(), counting=counting)  # type: ignore[arg-type]
    runs: list[int] = []
    async with polybus.connect(memory_url()) as bus:
        await bus.declare("orders", "g")
        sent = await bus.publish("orders", b"bad", key="k")
        await consume_through(bus, guard, runs, deliveries=3)
        (dead,) = await wait_dead_letters(bus, 1)
    assert runs == [1, 2]  # the third delivery never reached the handler
    assert dead.id == sent
    assert dead.body == b"bad"
    assert dead.headers[h.DLQ_ATTEMPTS] == "2"
    assert "exceeds max_deliveries=2" in dead.headers[h.DLQ_REASON]


async def test_a_success_resets_the_store_count() -> None:
    store = MemoryStore()
    guard = PoisonGuard(1, store=store, counting="store")
    done: list[str] = []

    async def ok(msg: Message) -> None:
        done.append(msg.id)

    async with polybus.connect(memory_url()) as bus, running(bus, [guard], ok):
        msg_id = await bus.publish("orders", "x")
        await until(lambda: len(done) == 1, what="processed")
        # the same id again (a redelivery after a lost ack) is not counted as 2
        await bus.publish("orders", "x", id=msg_id)
        await until(lambda: len(done) == 2, what="processed again")


async def test_the_worker_hands_the_limit_to_the_broker() -> None:
    runs: list[int] = []

    async def failing(msg: Message) -> None:
        runs.append(msg.delivery_attempt)
        raise RuntimeError("boom")

    async with polybus.connect(memory_url()) as bus, running(bus, [PoisonGuard(3)], failing):
        await bus.publish("orders", "x")
        (dead,) = await wait_dead_letters(bus, 1)
    assert runs == [1, 2, 3]
    assert dead.headers[h.DLQ_ATTEMPTS] == "3"


def test_bad_limit_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        PoisonGuard(0)
    assert info.value.field == "max_deliveries"


@pytest.mark.parametrize("mode", ["guard", "chain"])
async def test_a_crash_looping_message_is_caught_after_n_sigkilled_runs(
    tmp_path: Path, mode: str
) -> None:
    """A message that kills its consumer is dead-lettered on run N+1, unrun.

    This tests the store-count path, the one that protects backends without a native
    delivery count (Kafka). Simulation, stated plainly: memory:// dies with the
    process, so each child process publishes the same message id to its own fresh
    memory:// broker, standing in for a real broker that redelivers an unacked message
    after its consumer was SIGKILLed. The broker's delivery_attempt is therefore 1 in
    every run (asserted below) and cannot catch the loop; the only thing carried from
    run to run is the guard's SQLite store, which records each delivery before the
    handler runs.

    ``guard``: the guard alone, forced to count in its store. ``chain``: the
    recommended poison guard + dead letter + retry chain, the guard left on
    ``counting="auto"`` on a bus declaring ``native_delivery_count=False`` (as Kafka
    does); each run first fails transiently and is retried in process by Retry, whose
    own count restarts after every crash: only the guard's store count stops the loop.
    """
    db = tmp_path / "poison.db"
    message_id = uuid.uuid4().hex
    limit = 3

    async def run_child() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            str(db),
            message_id,
            str(limit),
            mode,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode() + err.decode()

    calls = ["call=1", "call=2"] if mode == "chain" else ["call=1"]
    for run in range(1, limit + 1):
        code, output = await run_child()
        assert code == -signal.SIGKILL, f"run {run}: {output}"
        handled = [line for line in output.splitlines() if line.startswith("HANDLER")]
        # the broker's own count never moves: only the store can see the loop
        assert handled == [f"HANDLER {message_id} attempt=1 {c}" for c in calls], output
    code, output = await run_child()
    assert code == 0, output
    assert "HANDLER" not in output  # caught before the handler ran
    assert f"DEAD-LETTERED {message_id} {limit} poison message: delivery {limit + 1}" in output

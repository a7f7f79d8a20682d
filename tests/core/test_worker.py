"""Worker: handlers, middleware order, key-ordered concurrency, graceful stop."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

import polybus
from polybus.errors import ConfigError

from .helpers import WAIT, drain, name


@asynccontextmanager
async def running(
    worker: polybus.Worker, topic: str, group: str = "g", ordering: str = "none"
) -> AsyncIterator[asyncio.Task[None]]:
    """Declare the group (so nothing published next is missed) and run ``worker`` in a
    task; on exit stop it and wait until it has settled everything."""
    await worker.bus.declare(topic, group, ordering=ordering)
    task = asyncio.create_task(worker.run())
    try:
        yield task
    finally:
        await worker.stop()
        async with asyncio.timeout(WAIT):
            await task


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until true; fail after :data:`WAIT` seconds."""
    try:
        async with asyncio.timeout(WAIT):
            # the conditions are plain state written by handlers: poll them
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


async def test_async_handler_acks_on_return(bus: polybus.Bus) -> None:
    topic, done = name(), []
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group="g")
    async def handle(msg: polybus.Message) -> None:
        done.append(msg.json()["n"])

    async with running(worker, topic):
        await bus.publish_many(topic, [{"n": i} for i in range(20)])
        await wait_for(lambda: len(done) == 20, "all 20 were handled")
    assert sorted(done) == list(range(20))
    async with bus.subscribe(topic, group="g") as sub:  # all acked: nothing comes back
        with pytest.raises(TimeoutError):
            await sub.get(timeout=0.2)


async def test_failing_handler_nacks_and_the_message_comes_back(bus: polybus.Bus) -> None:
    topic, attempts = name(), []
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group="g")
    async def handle(msg: polybus.Message) -> None:
        attempts.append(msg.delivery_attempt)
        if msg.delivery_attempt == 1:
            raise RuntimeError("transient")

    async with running(worker, topic):
        await bus.publish(topic, b"x")
        await wait_for(lambda: len(attempts) == 2, "the message was redelivered")
    assert attempts == [1, 2]


async def test_sync_handler_runs_in_a_thread(bus: polybus.Bus) -> None:
    topic = name()
    threads: list[threading.Thread] = []
    attempts: list[int] = []
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group="g")
    def handle(msg: polybus.Message) -> None:
        threads.append(threading.current_thread())
        attempts.append(msg.delivery_attempt)
        if msg.delivery_attempt == 1:
            raise ValueError("first time fails")

    async with running(worker, topic):
        await bus.publish(topic, b"sync")
        await wait_for(lambda: len(attempts) == 2, "the sync handler ran twice")
    assert attempts == [1, 2]
    assert threading.main_thread() not in threads


async def test_middleware_order_first_is_outermost(bus: polybus.Bus) -> None:
    topic, trace = name(), []

    def tag(label: str) -> polybus.Middleware:
        def wrap(handler: polybus.Handler) -> polybus.Handler:
            async def wrapped(msg: polybus.Message) -> None:
                trace.append(f"{label}>")
                await handler(msg)
                trace.append(f"<{label}")

            return wrapped

        return wrap

    worker = polybus.Worker(bus, [tag("outer"), tag("inner")], handle_signals=False)

    @worker.handler(topic, group="g")
    async def handle(msg: polybus.Message) -> None:
        trace.append("handler")

    async with running(worker, topic):
        await bus.publish(topic, b"x")
        await wait_for(lambda: len(trace) == 5, "the chain ran")
    assert trace == ["outer>", "inner>", "handler", "<inner", "<outer"]


@pytest.mark.parametrize("delivery", ["at_least_once", "effectively_once"])
async def test_same_key_sequential_in_order_different_keys_parallel(
    bus: polybus.Bus, delivery: polybus.DeliveryMode
) -> None:
    # a key-ordered route: the subscription hands out a key's next message only once
    # the earlier one is settled, so one key's handlers never overlap
    topic, keys, per_key = name(), ["a", "b", "c"], 10
    active: dict[str, int] = defaultdict(int)
    overlap: list[str] = []
    order: dict[str, list[int]] = defaultdict(list)
    running_keys: set[str] = set()
    all_keys_at_once = asyncio.Event()
    middleware = [polybus.Idempotency(polybus.stores.MemoryStore())]
    worker = polybus.Worker(bus, middleware, handle_signals=False)

    @worker.handler(topic, group="g", max_in_flight=16, delivery=delivery, ordering="key")
    async def handle(msg: polybus.Message) -> None:
        key = msg.key or ""
        active[key] += 1
        if active[key] > 1:
            overlap.append(key)
        running_keys.add(key)
        if len(running_keys) == len(keys):
            all_keys_at_once.set()
        if msg.json()["seq"] == 0:
            # the first message of each key waits until every key runs at once: with
            # sequential keys this never happens and the test fails on the deadline
            await asyncio.wait_for(all_keys_at_once.wait(), WAIT)
        await asyncio.sleep(0)  # hold the key across a task switch
        order[key].append(msg.json()["seq"])
        running_keys.discard(key)
        active[key] -= 1

    batch = [polybus.Outgoing({"seq": s}, key=k) for s in range(per_key) for k in keys]
    async with running(worker, topic, ordering="key"):
        await bus.publish_many(topic, batch)
        await wait_for(lambda: sum(map(len, order.values())) == len(batch), "all were handled")
    assert all_keys_at_once.is_set()
    assert overlap == []
    assert dict(order) == {k: list(range(per_key)) for k in keys}


async def test_unordered_route_runs_one_keys_messages_at_once(bus: polybus.Bus) -> None:
    topic, count = name(), 6
    started = 0
    all_started = asyncio.Event()
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group="g", max_in_flight=count)
    async def handle(msg: polybus.Message) -> None:
        nonlocal started
        started += 1
        if started == count:
            all_started.set()
        # every handler of the one key waits until all of them run: sequential
        # handling would never get there and fail on the deadline
        await asyncio.wait_for(all_started.wait(), WAIT)

    async with running(worker, topic):
        await bus.publish_many(topic, [polybus.Outgoing(b"x", key="same") for _ in range(count)])
        await wait_for(all_started.is_set, "every message of the key ran at once")


def test_key_order_with_at_most_once_is_refused_at_registration(bus: polybus.Bus) -> None:
    worker = polybus.Worker(bus, handle_signals=False)
    with pytest.raises(ConfigError) as raised:
        worker.handler("t", group="g", delivery="at_most_once", ordering="key")
    assert raised.value.field == "delivery"


async def test_an_at_most_once_worker_acks_before_the_handler_runs(bus: polybus.Bus) -> None:
    """at_most_once: every message is settled before its handler runs, so a handler
    that fails loses its message (that is the mode's contract): nothing comes back."""
    topic = name()
    settled_first: list[bool] = []
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group="g", delivery="at_most_once")
    async def handle(msg: polybus.Message) -> None:
        settled_first.append(msg.settlement == "ack")
        if msg.body == b"fails":
            raise RuntimeError("lost, as at_most_once allows")

    async with running(worker, topic):
        await bus.publish_many(topic, ["fails", "works"])
        await wait_for(lambda: len(settled_first) == 2, "both were handled")
    assert settled_first == [True, True]
    async with bus.subscribe(topic, group="g") as sub:
        with pytest.raises(TimeoutError):
            await sub.get(timeout=0.2)  # nothing was nacked


async def test_worker_never_exceeds_max_in_flight(bus: polybus.Bus) -> None:
    topic, limit, total = name(), 4, 40
    now_running, peak, done = 0, 0, []
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group="g", max_in_flight=limit)
    async def handle(msg: polybus.Message) -> None:
        nonlocal now_running, peak
        now_running += 1
        peak = max(peak, now_running)
        for _ in range(3):
            await asyncio.sleep(0)
        now_running -= 1
        done.append(msg.id)

    async with running(worker, topic):
        await bus.publish_many(topic, [str(i) for i in range(total)])
        await wait_for(lambda: len(done) == total, "all were handled")
    assert peak == limit


async def test_graceful_stop_finishes_in_flight_and_loses_nothing(bus: polybus.Bus) -> None:
    topic, total = name(), 30
    started: list[str] = []
    finished: list[str] = []
    release = asyncio.Event()
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.handler(topic, group="g", max_in_flight=5)
    async def handle(msg: polybus.Message) -> None:
        started.append(msg.id)
        await release.wait()
        finished.append(msg.id)

    await bus.declare(topic, "g")  # the group exists before anything is published
    ids = set(await bus.publish_many(topic, [str(i) for i in range(total)]))
    task = asyncio.create_task(worker.run())
    await wait_for(lambda: len(started) == 5, "five handlers are in flight")
    await worker.stop()
    await asyncio.sleep(0)
    assert not task.done()  # it waits for the in-flight handlers
    release.set()
    async with asyncio.timeout(WAIT):
        await task
    assert sorted(finished) == sorted(started)  # every started handler completed
    async with bus.subscribe(topic, group="g", max_in_flight=total) as sub:
        rest = await drain(sub, total - len(finished))
        with pytest.raises(TimeoutError):
            await sub.get(timeout=0.2)
    assert set(finished) | {m.id for m in rest} == ids
    assert not set(finished) & {m.id for m in rest}  # acked ones are not redelivered


@pytest.mark.parametrize("round_", range(5))
async def test_a_stop_while_messages_stream_in_loses_nothing(bus: polybus.Bus, round_: int) -> None:
    """Deliveries keep arriving while the Worker stops (its handlers start from the
    receive itself): every handler that started has finished when ``run()`` returns,
    none starts after that, each handled message stays acked and every other one comes
    back. Stops land at a different point of the stream each round."""
    topic = name()
    started: list[str] = []
    finished: list[str] = []
    worker = polybus.Worker(bus, handle_signals=False)

    # not saturated: a receive is waiting when the worker stops
    @worker.handler(topic, group="g", max_in_flight=64)
    async def handle(msg: polybus.Message) -> None:
        started.append(msg.id)
        await asyncio.sleep(0.005)  # the stop waits for it while deliveries arrive
        finished.append(msg.id)

    await bus.declare(topic, "g")
    ids: set[str] = set()
    feeding = True

    async def feed() -> None:
        while feeding:
            ids.update(await bus.publish_many(topic, [b"x"] * 7))
            await asyncio.sleep(0.001)  # a producer's pace: the worker keeps up

    task = asyncio.create_task(worker.run())
    feeder = asyncio.create_task(feed())
    await wait_for(lambda: len(finished) >= 20 + 7 * round_, "the stream is being handled")
    await worker.stop()
    async with asyncio.timeout(WAIT):
        await task
    assert sorted(started) == sorted(finished)  # nothing was left running
    feeding = False
    await feeder
    assert sorted(started) == sorted(finished)  # and nothing started since
    assert len(set(finished)) == len(finished)
    async with bus.subscribe(topic, group="g", max_in_flight=len(ids)) as sub:
        rest = await drain(sub, len(ids) - len(finished))
        with pytest.raises(TimeoutError):
            await sub.get(timeout=0.2)
    assert set(finished) | {m.id for m in rest} == ids
    assert not set(finished) & {m.id for m in rest}  # acked ones are not redelivered


async def test_worker_without_handlers_is_a_config_error(bus: polybus.Bus) -> None:
    with pytest.raises(ConfigError) as info:
        await polybus.Worker(bus, handle_signals=False).run()
    assert info.value.field == "handler"


def test_effectively_once_requires_idempotency(bus: polybus.Bus) -> None:
    worker = polybus.Worker(bus, handle_signals=False)
    with pytest.raises(ConfigError) as info:
        worker.handler("t", group="g", delivery="effectively_once")
    assert info.value.field == "delivery"


async def test_wait_ready_means_every_group_exists(bus: polybus.Bus) -> None:
    """After wait_ready(), a message published is received by every handler's group."""
    worker = polybus.Worker(bus, handle_signals=False)
    seen: dict[str, list[str]] = {"a": [], "b": []}
    both = asyncio.Event()

    def make(name: str) -> Callable[[polybus.Message], Awaitable[None]]:
        async def handle(msg: polybus.Message) -> None:
            seen[name].append(msg.id)
            if all(seen.values()):
                both.set()

        return handle

    worker.handler("ready-topic", group="a")(make("a"))
    worker.handler("ready-topic", group="b")(make("b"))
    assert not worker.ready
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.wait_ready(), 5)
    assert worker.ready
    sent = await bus.publish("ready-topic", b"x")
    await asyncio.wait_for(both.wait(), 5)
    await worker.stop()
    await asyncio.wait_for(running, 5)
    assert seen == {"a": [sent], "b": [sent]}
    assert not worker.ready


async def test_startup_runs_before_the_first_message_and_shutdown_after_the_last(
    bus: polybus.Bus,
) -> None:
    topic, events = name(), []
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.on_startup
    async def open_pool() -> None:
        events.append("startup")

    @worker.on_shutdown
    def close_pool() -> None:  # sync hooks work too
        events.append("shutdown")

    @worker.handler(topic, group="g")
    async def handle(msg: polybus.Message) -> None:
        await asyncio.sleep(0.05)
        events.append("handled")

    await bus.declare(topic, "g")
    await bus.publish(topic, b"x")
    running = asyncio.create_task(worker.run())
    await wait_for(lambda: "handled" in events or running.done(), "the message was handled")
    await worker.stop()
    await running
    assert events == ["startup", "handled", "shutdown"]


async def test_a_failing_startup_hook_ends_run_before_consuming(bus: polybus.Bus) -> None:
    topic, events = name(), []
    worker = polybus.Worker(bus, handle_signals=False)

    @worker.on_startup
    def broken() -> None:
        raise RuntimeError("no database")

    @worker.on_shutdown
    def close_pool() -> None:
        events.append("shutdown")

    @worker.handler(topic, group="g")
    async def handle(msg: polybus.Message) -> None:
        events.append("handled")

    with pytest.raises(RuntimeError, match="no database"):
        await worker.run()
    assert events == []


async def test_a_route_error_is_raised_as_itself_not_a_group(bus: polybus.Bus) -> None:
    topic = name()
    await bus.declare(topic, "g", ordering="key")
    worker = polybus.Worker(bus, handle_signals=False)
    worker.handler(topic, group="g")(lambda msg: None)  # ordering none: a conflict at run
    with pytest.raises(ConfigError) as raised:
        await worker.run()
    assert raised.value.field == "ordering"


def test_handler_options_fail_at_registration(bus: polybus.Bus) -> None:
    worker = polybus.Worker(bus, handle_signals=False)
    with pytest.raises(ConfigError) as raised:
        worker.handler("t", group="g", max_in_flight=0)
    assert raised.value.field == "max_in_flight"
    worker.handler("t", group="g")(lambda msg: None)
    with pytest.raises(ConfigError) as again:
        worker.handler("t", group="g")
    assert "already registered" in str(again.value)

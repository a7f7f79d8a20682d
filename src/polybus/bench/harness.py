"""Run the SDK and a raw baseline side by side: alternating rounds, one event loop.

Each round, on each side, four publish phases as applications publish, each timed on
its own: ``singles`` messages one awaited publish at a time; ``messages`` in waves of
``concurrency`` publishes in flight at once (the SDK: that many concurrent
``Bus.publish`` calls; the raw client: the wave pipelined, its natural form); then
``messages`` in batches of ``batch`` (every batch confirmed before the next). Then
everything published is received and acked, then ``latency_samples`` round trips.
The side that goes first alternates from round to round so that warm-up and
background noise fall on both. One untimed warm-up round per side comes first. Each
side has its own topic and its own group, named after the run.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..config import redact
from . import RawBaseline
from .stats import Report, SideResult


@dataclass(frozen=True, slots=True)
class Plan:
    """What to measure; every count >= 1 except ``latency_samples`` (0 skips it)."""

    messages: int = 20_000
    rounds: int = 5
    size: int = 1024
    batch: int = 500
    latency_samples: int = 200
    warmup_messages: int = 1_000
    singles: int = 1_000
    """Messages published one awaited publish at a time, per round (0 skips the phase)."""
    concurrency: int = 500
    """Publishes in flight at once in the concurrent phase (0 skips the phase)."""

    def __post_init__(self) -> None:
        for name in ("messages", "rounds", "size", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("latency_samples", "warmup_messages", "singles", "concurrency"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


Progress = Callable[[str], None]
"""Told what the run is doing before each step (``"round 2/5: raw"``)."""


def _quiet(step: str) -> None:
    pass


async def compare(
    backend: str,
    url: str,
    sdk: RawBaseline,
    raw: RawBaseline,
    plan: Plan,
    progress: Progress = _quiet,
) -> Report:
    """Measure both sides under ``plan`` and return the report (medians of rounds)."""
    run_id = uuid.uuid4().hex[:8]
    body = os.urandom(plan.size)
    bodies = [body] * plan.messages
    sides = {"sdk": sdk, "raw": raw}
    results = {"sdk": SideResult(), "raw": SideResult()}
    opened: list[RawBaseline] = []
    try:
        for label, side in sides.items():
            # own topic and own group per side and run: a group shared between the sides
            # (or with an earlier run) would rebalance one side when the other joins
            name = f"polybus-bench-{run_id}-{label}"
            progress(f"setting up {label}")
            await side.setup(url, name, name)
            opened.append(side)
        warmup = Plan(
            messages=max(1, plan.warmup_messages),
            batch=plan.batch,
            latency_samples=min(plan.latency_samples, 10),
            singles=min(plan.singles, 10),
            concurrency=plan.concurrency,
            size=plan.size,
        )
        for label, side in sides.items():
            progress(f"warm-up: {label}")
            await _round(side, warmup, [body] * warmup.messages, body, None)
        for number in range(plan.rounds):
            order = ["sdk", "raw"] if number % 2 == 0 else ["raw", "sdk"]
            for label in order:
                progress(f"round {number + 1}/{plan.rounds}: {label}")
                await _round(sides[label], plan, bodies, body, results[label])
    finally:
        progress("tearing down")
        for side in opened:
            await side.teardown()
    return Report(
        backend=backend,
        url=redact(url),
        messages=plan.messages,
        rounds=plan.rounds,
        size=plan.size,
        batch=plan.batch,
        singles=plan.singles,
        concurrency=plan.concurrency,
        sdk=results["sdk"].summary(),
        raw=results["raw"].summary(),
        raw_description=str(getattr(raw, "description", type(raw).__name__)),
        sdk_description=str(getattr(sdk, "description", type(sdk).__name__)),
    )


async def _round(
    side: RawBaseline, plan: Plan, bodies: list[bytes], body: bytes, into: SideResult | None
) -> None:
    clock = time.perf_counter
    concurrent = getattr(side, "publish_concurrent", None) or side.publish
    started = clock()
    for _ in range(plan.singles):
        await side.publish([body])
    singles_done = clock()
    waves = bodies if plan.concurrency else []
    for start in range(0, len(waves), plan.concurrency or 1):
        await concurrent(waves[start : start + plan.concurrency])
    concurrent_done = clock()
    for start in range(0, len(bodies), plan.batch):
        await side.publish(bodies[start : start + plan.batch])
    published = clock()
    total = plan.singles + len(waves) + len(bodies)
    took = await side.consume(total)
    consumed = clock()
    latencies = []
    for _ in range(plan.latency_samples):
        before = clock()
        await side.round_trip(body)
        latencies.append(clock() - before)
    end_round = getattr(side, "end_round", None)
    if end_round is not None:
        await end_round()
    if into is None or not bodies:
        return
    if plan.singles:
        into.single_rates.append(plan.singles / max(singles_done - started, 1e-9))
    if waves:
        into.concurrent_rates.append(len(waves) / max(concurrent_done - singles_done, 1e-9))
    consume_time = took if isinstance(took, float) else consumed - published
    into.publish_rates.append(len(bodies) / max(published - concurrent_done, 1e-9))
    into.consume_rates.append(total / max(consume_time, 1e-9))
    into.end_to_end_rates.append(
        len(bodies) / max(published - concurrent_done + consume_time * len(bodies) / total, 1e-9)
    )
    into.latencies.extend(latencies)

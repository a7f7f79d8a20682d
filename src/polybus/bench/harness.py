"""Run the SDK and a raw baseline side by side: alternating rounds, one event loop.

Each round, on each side: publish ``messages`` bodies in chunks of ``batch`` (every
chunk confirmed before the next), then receive and ack all of them, then take
``latency_samples`` round trips. The side that goes first alternates from round to
round so that warm-up and background noise fall on both. One untimed warm-up round
per side comes first. Each side has its own topic and its own group, named after the run.
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
    batch: int = 100
    latency_samples: int = 200
    warmup_messages: int = 1_000

    def __post_init__(self) -> None:
        for name in ("messages", "rounds", "size", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.latency_samples < 0 or self.warmup_messages < 0:
            raise ValueError("latency_samples and warmup_messages must be >= 0")


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
        warmup = [body] * plan.warmup_messages
        for label, side in sides.items():
            progress(f"warm-up: {label}")
            await _round(side, warmup, body, plan.batch, min(plan.latency_samples, 10), None)
        for number in range(plan.rounds):
            order = ["sdk", "raw"] if number % 2 == 0 else ["raw", "sdk"]
            for label in order:
                progress(f"round {number + 1}/{plan.rounds}: {label}")
                await _round(
                    sides[label], bodies, body, plan.batch, plan.latency_samples, results[label]
                )
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
        sdk=results["sdk"].summary(),
        raw=results["raw"].summary(),
        raw_description=str(getattr(raw, "description", type(raw).__name__)),
        sdk_description=str(getattr(sdk, "description", type(sdk).__name__)),
    )


async def _round(
    side: RawBaseline,
    bodies: list[bytes],
    body: bytes,
    batch: int,
    latency_samples: int,
    into: SideResult | None,
) -> None:
    clock = time.perf_counter
    started = clock()
    for start in range(0, len(bodies), batch):
        await side.publish(bodies[start : start + batch])
    published = clock()
    if bodies:
        await side.consume(len(bodies))
    consumed = clock()
    latencies = []
    for _ in range(latency_samples):
        before = clock()
        await side.round_trip(body)
        latencies.append(clock() - before)
    if into is None or not bodies:
        return
    count = len(bodies)
    into.publish_rates.append(count / max(published - started, 1e-9))
    into.consume_rates.append(count / max(consumed - published, 1e-9))
    into.end_to_end_rates.append(count / max(consumed - started, 1e-9))
    into.latencies.extend(latencies)

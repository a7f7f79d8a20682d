"""Operations tier: an unordered group scales out across processes."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter

import pytest

from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.markers import NETWORK, needs
from polybus_conformance.waiting import wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.operations]

MESSAGES = 200
WAVES = 10
WORK = 0.01
"""Seconds each message takes to process (so one consumer alone cannot keep up)."""
SHARE = 0.2


@needs(NETWORK, "competing_consumers")
async def test_ops_two_processes_share_an_unordered_group(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """35 scale-out: two consumer processes of an unordered group, 10 ms of work per
    message: each processes at least a fifth of 200 messages"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    producer = await polybus_bus_factory()
    await producer.declare(topic, group)
    done: Counter[int] = Counter()
    seen: set[str] = set()
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "polybus_conformance._child_worker",
            polybus_target.url,
            topic,
            group,
            str(WORK),
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]

    async def read(index: int) -> None:
        stdout = children[index].stdout
        assert stdout is not None
        while line := await stdout.readline():
            seen.add(line.decode().strip())
            done[index] += 1

    readers = [asyncio.create_task(read(i)) for i in range(2)]
    ids: list[str] = []
    try:
        # in waves: a group whose members are still joining shares from then on
        for wave in range(WAVES):
            ids += await producer.publish_many(
                topic, [f"w{wave}-{i}" for i in range(MESSAGES // WAVES)]
            )
            await asyncio.sleep(0.2)
        await wait_for(
            lambda: set(ids) <= seen,
            within=profile.idle_timeout + MESSAGES * WORK * 2,
            what=f"every message processed ({len(set(ids) & seen)} of {len(ids)}; {dict(done)})",
        )
    finally:
        for child in children:
            if child.returncode is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), profile.idle_timeout)
            except TimeoutError:
                child.kill()
                await child.wait()
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    shares = [done[i] / len(ids) for i in range(2)]
    assert min(shares) >= SHARE, f"the work was not shared: {dict(done)} of {len(ids)}"

"""Catalogue 10: messages held by a consumer process that dies come back."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.markers import NETWORK, needs
from polybus_conformance.waiting import collect_ids

pytestmark = pytest.mark.asyncio


@needs(NETWORK)
async def test_unsettled_return_after_consumer_dies(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """10 unsettled messages come back after their consumer process is killed (SIGKILL)"""
    topic, group = polybus_names.topic(), polybus_names.group()
    profile = polybus_target.profile
    producer = await polybus_bus_factory()
    await producer.declare(topic, group)
    ids = await producer.publish_many(topic, [f"orphan-{i}" for i in range(5)])
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polybus_conformance._child_consumer",
        polybus_target.url,
        topic,
        group,
        str(len(ids)),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        held: list[str] = []
        async with asyncio.timeout(profile.idle_timeout * 2):
            while len(held) < len(ids):
                line = await child.stdout.readline()
                if not line:
                    pytest.fail(f"the consumer process exited after {len(held)} messages")
                held.append(line.decode().strip())
        assert set(held) == set(ids)
    finally:
        if child.returncode is None:
            child.send_signal(signal.SIGKILL)
        await child.wait()
    consumer = await polybus_bus_factory()
    async with consumer.subscribe(topic, group=group) as sub:
        back = await collect_ids(sub, ids, idle_timeout=profile.redelivery_timeout)
    assert {m.id for m in back} == set(ids)

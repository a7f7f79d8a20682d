"""`polybus run module:worker` runs a service: it starts, processes, and stops on SIGTERM
with every message settled (a real broker: a separate process cannot share memory://)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

import polybus
from polybus_conformance import backends
from polybus_conformance.plugin import session_broker
from polybus_conformance.provisioning import Unavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def nats_url(request: pytest.FixtureRequest) -> str:
    try:
        return session_broker(request.config, "nats").url
    except Unavailable as exc:
        if backends.required("nats"):
            pytest.fail(f"nats is required but: {exc}")
        pytest.skip(str(exc).splitlines()[0])


async def test_polybus_run_serves_until_sigterm_and_settles_everything(nats_url: str) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "polybus.cli",
        "run",
        "examples.order_service:worker",
        "--url",
        nats_url,
        cwd=ROOT,
        env={**os.environ, "ORDER_SERVICE_TOPIC": topic},
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []

    async def read_until(needle: str, count: int) -> None:
        assert child.stderr is not None
        async with asyncio.timeout(30):
            while sum(needle in line for line in lines) < count:
                line = (await child.stderr.readline()).decode()
                if not line:
                    pytest.fail("polybus run exited early:\n" + "".join(lines[-20:]))
                lines.append(line)

    try:
        await read_until("subscribed topic=", 3)  # every group exists from here on
        orders = [
            {"id": n, "customer": "c", "item": "i", "quantity": 1, "unit_price": 2.0}
            for n in range(5)
        ]
        async with polybus.connect(nats_url) as bus:
            await bus.publish_many(topic, [json.dumps(o).encode() for o in orders])
        await read_until("shipped order", 5)
        await read_until("counted", 5)
        await read_until("remembered", 5)
        child.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert child.stderr is not None
            rest = await child.stderr.read()
            lines.append(rest.decode())
            code = await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    log = "".join(lines)
    assert code == 0, log[-2000:]
    assert "stopping gracefully" in log
    async with polybus.connect(nats_url) as bus:
        for group, ordering in (("fulfilment", "none"), ("analytics", "none"), ("history", "key")):
            async with bus.subscribe(topic, group=group, ordering=ordering) as sub:
                with pytest.raises(TimeoutError):
                    await sub.get(timeout=1.0)  # everything was acked before the exit


def test_a_target_that_is_not_a_worker_exits_non_zero() -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "polybus.cli", "run", "examples.order_service:Books"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "not a polybus.Worker" in done.stderr

"""Shared helpers of the Redis adapter tests: unique names, a plain redis-py client
(what a native client or an operator sees), and private redis-server processes for what
the shared broker (the ``redis_url`` fixture in ``conftest.py``) cannot serve: a server
with a password, one with CONFIG disabled, one with an append-only file.

A private server runs through the suite's provisioning process handling (own process
group, log file, readiness check against a deadline, killed if the run is SIGTERMed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

import polybus
from polybus_conformance.provisioning.base import Process, free_port, wait_ready
from polybus_conformance.provisioning.redis import RedisLauncher, _pong
from polybus_conformance.provisioning.urls import with_options

__all__ = ["eventually", "free_port", "name", "private_server", "raw", "with_options"]


def name(label: str) -> str:
    """A unique topic or group name."""
    return f"t-{label}-{uuid.uuid4().hex[:8]}"


def raw(url: str) -> Any:
    """A plain redis-py client of the server at the polybus ``url`` (typed Any: redis-py's
    reply types are unions of everything)."""
    return Redis.from_url(url.split("?")[0])


@pytest.fixture(name="bus")
async def bus_fixture(redis_url: str) -> AsyncIterator[polybus.Bus]:
    """An open bus on the test Redis (``from redis_support import bus_fixture``)."""
    async with polybus.connect(redis_url) as opened:
        yield opened


@pytest.fixture(name="raw")
async def raw_fixture(redis_url: str) -> AsyncIterator[Any]:
    """A plain redis-py client on the test Redis (``from redis_support import raw_fixture``)."""
    client = raw(redis_url)
    yield client
    await client.aclose()


async def eventually(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``within`` seconds
    (a deadline for failure, not a wait for readiness)."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {within}s")
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def private_server(workdir: Path, *args: str) -> Iterator[str]:
    """A redis-server of its own with extra ``args``; yields its URL."""
    program = RedisLauncher().find()
    if program is None:
        pytest.fail("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    argv = [program, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir)]
    proc = Process("redis-server", [*argv, "--save", "", *args], workdir / "redis.log")
    try:
        wait_ready([proc], lambda: _ready(port, args), 20, "redis-server")
        yield f"redis://127.0.0.1:{port}"
    finally:
        proc.kill()


def _ready(port: int, args: tuple[str, ...]) -> bool:
    # a server with a password answers PING with -NOAUTH: it is up all the same
    return _pong(port) or "--requirepass" in args

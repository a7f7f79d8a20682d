"""Shared helpers of the Pub/Sub adapter tests: unique names, plain google-cloud-pubsub
clients (the "native client" a non-polybus service would use), and a private emulator a
test stops and starts again. The shared emulator comes from the ``pubsub_url`` fixture
(``conftest.py``).

A private emulator runs through the suite's provisioning process handling (own process
group, log file, readiness check against a deadline, killed if the run is SIGTERMed).
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.pubsub_v1.services.publisher import PublisherAsyncClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.services.subscriber import SubscriberAsyncClient
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

from polybus_conformance.provisioning.base import (
    Process,
    free_port,
    port_open,
    wait_closed,
    wait_ready,
)
from polybus_conformance.provisioning.pubsub_emulator import PubSubEmulatorLauncher

__all__ = ["Native", "PrivateEmulator", "emulator_host", "eventually", "name", "native"]


def name(label: str) -> str:
    """A unique topic or group name."""
    return f"t-{label}-{uuid.uuid4().hex[:8]}"


def emulator_host(url: str) -> str | None:
    """The emulator ``url`` talks to (its ``emulator=`` option, else the environment)."""
    if "emulator=" in url:
        return url.split("emulator=", 1)[1].split("&", 1)[0]
    return os.environ.get("PUBSUB_EMULATOR_HOST") or None


async def eventually(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``within``
    seconds (a deadline for failure, not a wait for readiness)."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {within}s")
        await asyncio.sleep(0.05)


@dataclass
class Native:
    """Plain google-cloud-pubsub async clients of one emulator."""

    publisher: PublisherAsyncClient
    subscriber: SubscriberAsyncClient


@asynccontextmanager
async def native(url: str) -> AsyncIterator[Native]:
    """Native clients of the emulator behind ``url`` (the test is skipped when the URL
    names Google Cloud: these tests create and delete resources freely)."""
    host = emulator_host(url)
    if host is None:
        pytest.skip("the native-client tests need the Pub/Sub emulator")
    pub_channel = grpc.aio.insecure_channel(host)
    sub_channel = grpc.aio.insecure_channel(host)
    try:
        yield Native(
            PublisherAsyncClient(transport=PublisherGrpcAsyncIOTransport(channel=pub_channel)),
            SubscriberAsyncClient(transport=SubscriberGrpcAsyncIOTransport(channel=sub_channel)),
        )
    finally:
        await pub_channel.close()
        await sub_channel.close()


def _answers(port: int) -> bool:
    """The emulator answers ``Ok`` on its HTTP root once its gRPC server is up."""
    if not port_open(port):
        return False
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
        return bool(resp.status == 200)


class PrivateEmulator:
    """A Pub/Sub emulator on a fixed free port that a test stops and starts again
    (it starts empty every time: the emulator keeps nothing)."""

    def __init__(self, workdir: Path) -> None:
        program = PubSubEmulatorLauncher().find()
        if program is None:
            pytest.fail("cloud-pubsub-emulator is not installed (google-cloud-cli-pubsub-emulator)")
        self.port = free_port()
        self.argv = [program, "--host=127.0.0.1", f"--port={self.port}"]
        self.log = workdir / "pubsub-emulator.log"
        self.proc: Process | None = None

    @property
    def url(self) -> str:
        return f"pubsub://private-project?emulator=127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (again, after :meth:`stop`) and return once the emulator answers."""
        if self.proc is None:
            self.proc = Process("cloud-pubsub-emulator", self.argv, self.log)
        else:
            self.proc.respawn()
        wait_ready([self.proc], lambda: _answers(self.port), 60, "cloud-pubsub-emulator")

    def stop(self) -> None:
        """Stop it (SIGKILL: the emulator has nothing to flush); returns once the port
        is closed."""
        if self.proc is not None and self.proc.running():
            self.proc.kill()
            wait_closed(self.port, "cloud-pubsub-emulator")


@asynccontextmanager
async def private_emulator(workdir: Path) -> AsyncIterator[PrivateEmulator]:
    emulator = PrivateEmulator(workdir)
    await asyncio.to_thread(emulator.start)
    try:
        yield emulator
    finally:
        await asyncio.to_thread(emulator.stop)

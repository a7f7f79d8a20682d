"""Shared helpers of the NATS adapter tests: unique names, and private nats-server
processes for what the shared broker (the ``nats_url`` fixture in ``conftest.py``)
cannot serve: a server without JetStream, one that requires a password, and one a test
stops and starts again.

A private server runs through the suite's provisioning process handling (own process
group, log file, readiness check against a deadline, killed if the run is SIGTERMed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from polybus_conformance.provisioning.base import (
    Process,
    free_port,
    port_open,
    wait_closed,
    wait_ready,
)
from polybus_conformance.provisioning.nats import NatsLauncher

__all__ = ["PrivateServer", "eventually", "free_port", "name", "private_server"]


def name(label: str) -> str:
    """A unique topic or group name."""
    return f"t-{label}-{uuid.uuid4().hex[:8]}"


async def eventually(condition: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``within``
    seconds (a deadline for failure, not a wait for readiness)."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {within}s")
        await asyncio.sleep(0.05)


class PrivateServer:
    """A nats-server on a fixed free port, restartable over the same JetStream store."""

    def __init__(
        self, workdir: Path, jetstream: bool = True, login: tuple[str, str] | None = None
    ) -> None:
        program = NatsLauncher().find()
        if program is None:
            pytest.fail("nats-server is not installed (Debian package nats-server)")
        self.port = free_port()
        self.argv = [program, "-a", "127.0.0.1", "-p", str(self.port)]
        if jetstream:
            self.argv += ["-js", "-sd", str(workdir / "store")]
        if login is not None:
            self.argv += ["--user", login[0], "--pass", login[1]]
        self.log = workdir / "nats-server.log"
        self.proc: Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start (again, after :meth:`stop`) and return once the server accepts
        connections; a server that exits or stays silent fails the test with its log."""
        if self.proc is None:
            self.proc = Process("nats-server", self.argv, self.log)
        else:
            self.proc.respawn()
        wait_ready([self.proc], lambda: port_open(self.port), 20, "nats-server")

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (a clean shutdown) or SIGKILL (a crash); returns once the port is
        closed."""
        if self.proc is None or not self.proc.running():
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.stop()
        wait_closed(self.port, "nats-server")


@contextlib.contextmanager
def private_server(
    workdir: Path, jetstream: bool = True, login: tuple[str, str] | None = None
) -> Iterator[PrivateServer]:
    server = PrivateServer(workdir, jetstream, login)
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)

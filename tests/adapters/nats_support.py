"""Shared helpers of the NATS adapter tests: the broker URL, skip-or-fail when it is
not reachable, unique names, and private nats-server processes for restart tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

DEFAULT_URL = "nats://127.0.0.1:4222"


def url() -> str:
    """The broker under test: ``POLYBUS_NATS_URL`` or this machine's nats-server."""
    return os.environ.get("POLYBUS_NATS_URL", DEFAULT_URL)


def required() -> bool:
    names = {n.strip() for n in os.environ.get("POLYBUS_REQUIRE", "").split(",")}
    return bool(names & {"all", "nats"})


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail when ``POLYBUS_REQUIRE`` names nats."""
    if required():
        pytest.fail(f"{reason}, and POLYBUS_REQUIRE names nats")
    pytest.skip(reason)


def _host_port(nats_url: str) -> tuple[str, int]:
    netloc = nats_url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    netloc = netloc.rsplit("@", 1)[-1].split(",")[0]
    host, _, port = netloc.partition(":")
    return host or "127.0.0.1", int(port or 4222)


def info(host: str, port: int) -> dict[str, object] | None:
    """The server's INFO greeting, or None when nothing answers."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.settimeout(1)
            line = sock.makefile("rb").readline()
    except OSError:
        return None
    if not line.startswith(b"INFO "):
        return None
    data: dict[str, object] = json.loads(line[5:])
    return data


def require_broker() -> str:
    """The URL of a reachable JetStream server, else skip (or fail)."""
    target = url()
    greeting = info(*_host_port(target))
    if greeting is None:
        unavailable(f"no NATS server answers at {target} (set POLYBUS_NATS_URL)")
    elif not greeting.get("jetstream"):
        unavailable(f"the NATS server at {target} has no JetStream")
    return target


def name(label: str) -> str:
    """A unique topic or group name."""
    return f"t-{label}-{uuid.uuid4().hex[:8]}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: object, timeout: float, what: str) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    pytest.fail(f"{what} did not happen within {timeout}s")


class PrivateServer:
    """A nats-server process on a fixed free port, restartable over the same store."""

    def __init__(self, workdir: Path, jetstream: bool = True) -> None:
        program = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(program).is_file():
            unavailable("nats-server is not installed (Debian package nats-server)")
        self.program = program
        self.port = free_port()
        self.store = workdir / "store"
        self.log = workdir / "nats-server.log"
        self.jetstream = jetstream
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [self.program, "-a", "127.0.0.1", "-p", str(self.port)]
        if self.jetstream:
            args += ["-js", "-sd", str(self.store)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        proc = self.proc
        wait_until(
            lambda: proc.poll() is not None or info("127.0.0.1", self.port) is not None,
            20,
            f"nats-server on port {self.port} answering",
        )
        if proc.poll() is not None:
            pytest.fail(f"nats-server exited: {self.log.read_text(errors='replace')[-2000:]}")

    def stop(self, kill: bool = False) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def private_server(workdir: Path, jetstream: bool = True) -> Iterator[PrivateServer]:
    server = PrivateServer(workdir, jetstream)
    server.start()
    try:
        yield server
    finally:
        server.stop(kill=True)

"""The one provisioning interface: a :class:`Launcher` starts a broker and returns a
:class:`Broker` (its URL, flavour and a way to stop it).

Local launchers run the broker as a child process on a free loopback port, in its own
process group, with its output kept in a log file, wait for a real protocol-level
readiness check against a deadline, and stop it by process id.
"""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from polybus.config import redact


class Unavailable(Exception):
    """No broker could be provided; the message says why (shown as the skip reason)."""


class StartFailed(Unavailable):
    """The broker program exists but did not become ready; the log tail is included."""


@dataclass(eq=False)
class Broker:
    """A broker the suite may use. ``stop`` is idempotent (a no-op for explicit URLs)."""

    backend: str
    url: str
    flavour: str
    origin: str
    """``url`` (given by the user), ``container``, ``local`` or ``builtin``."""
    log_dir: Path | None = None
    pids: tuple[int, ...] = ()
    """Process-group leaders of a local broker (what ``polybus brokers down`` stops)."""
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self) -> None:
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()

    def describe(self) -> str:
        return f"{self.backend} at {redact(self.url)} ({self.flavour}, {self.origin})"


class Launcher(abc.ABC):
    """Starts one kind of broker as a local process."""

    backend: str
    flavour: str
    program: str
    """What has to be installed, for the reason shown when it is not."""

    @abc.abstractmethod
    def find(self) -> str | None:
        """The path of the broker's program, or None when it is not installed."""

    @abc.abstractmethod
    def start(self, workdir: Path, timeout: float = 60.0) -> Broker:
        """Start on a free port under ``workdir``; return once it is ready.

        Raises :class:`StartFailed` (process stopped, with its log) if it does not
        become ready within ``timeout`` seconds.
        """


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Process:
    """A child process in its own process group, its output in ``log``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            # own session: the whole tree (launcher scripts, JVMs, beam) stops together
            self.popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; reap the child."""
        self._signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.popen.wait(5)
        # children that outlived the leader (a JVM under a shell script) go too
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


def wait_ready(
    procs: Sequence[Process], check: Callable[[], bool], timeout: float, what: str
) -> None:
    """Poll ``check`` until it is true. Raise :class:`StartFailed` with the log tail when
    a process exits or ``timeout`` passes (after stopping every process)."""
    deadline = time.monotonic() + timeout
    while True:
        dead = [p for p in procs if not p.running()]
        if dead:
            _abort(procs, f"{what}: {dead[0].name} exited with {dead[0].popen.returncode}")
        try:
            if check():
                return
        except Exception:  # any failure of the probe means: not ready yet
            pass
        if time.monotonic() > deadline:
            _abort(procs, f"{what}: not ready after {timeout:.0f}s")
        time.sleep(0.05)


def _abort(procs: Sequence[Process], problem: str) -> None:
    tails = "\n".join(f"--- {p.log} ---\n{p.tail()}" for p in procs)
    for proc in reversed(procs):
        proc.stop(timeout=5)
    raise StartFailed(f"{problem}\n{tails}")


def stopper(procs: Sequence[Process], port: int) -> Callable[[], None]:
    """Stop ``procs`` (last started first) and check the port is closed afterwards."""

    def stop() -> None:
        for proc in reversed(procs):
            proc.stop()
        deadline = time.monotonic() + 10
        while port_open(port):
            if time.monotonic() > deadline:
                names = ", ".join(p.name for p in procs) or "the broker"
                raise RuntimeError(f"port {port} still open after stopping {names}")
            time.sleep(0.05)

    return stop

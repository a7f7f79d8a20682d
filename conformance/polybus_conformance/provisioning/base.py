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

from . import cleanup


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
    listen_port: int | None = None
    """The port the broker itself listens on, when clients are sent elsewhere (a tansu
    advertising a fault proxy's port)."""
    _stop: Callable[[], None] | None = field(default=None, repr=False)
    _restart: Callable[[bool], tuple[int, ...]] | None = field(default=None, repr=False)

    def stop(self) -> None:
        stop, self._stop = self._stop, None
        self._restart = None
        if stop is not None:
            stop()

    @property
    def restartable(self) -> bool:
        """True for a broker the suite runs itself and can stop and start again."""
        return self._restart is not None

    def restart(self, *, hard: bool = False) -> None:
        """Stop the broker and start it again on the same port and data directory;
        return once it is ready. ``hard`` kills it (SIGKILL: no clean shutdown) instead
        of stopping it. Blocks: call it through :func:`asyncio.to_thread` from a test.

        Raises :class:`Unavailable` for a broker the suite cannot restart (given by URL,
        a container, built in) and :class:`StartFailed` when it does not come back.
        """
        if self._restart is None:
            raise Unavailable(f"cannot restart {self.describe()}")
        self.pids = self._restart(hard)

    def describe(self) -> str:
        return f"{self.backend} at {redact(self.url)} ({self.flavour}, {self.origin})"

    def detach(self) -> None:
        """Let the broker outlive this process (``polybus brokers up``): it is no longer
        killed at exit or on SIGTERM; stopping it is then up to the caller."""
        for pid in self.pids:
            cleanup.untrack(pid)


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
        self._argv = list(argv)
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd
        log.parent.mkdir(parents=True, exist_ok=True)
        self.popen = self._spawn()
        self.pid = self.popen.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            # own session: the whole tree (launcher scripts, JVMs, beam) stops together
            popen = subprocess.Popen(
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
                start_new_session=True,
            )
        # killed at exit or on SIGTERM/SIGHUP unless stopped first: no orphaned brokers
        cleanup.track(popen.pid, self.name)
        return popen

    def respawn(self) -> None:
        """Start the same program again (same arguments, environment and log) after
        :meth:`stop` or :meth:`kill`."""
        if self.running():
            raise RuntimeError(f"{self.name} (pid {self.pid}) is still running")
        self.popen = self._spawn()
        self.pid = self.popen.pid

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash: no clean shutdown)."""
        self._signal(signal.SIGKILL)
        self.popen.wait(10)

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
        if sig == signal.SIGKILL:  # every way of stopping ends here: the group is gone
            cleanup.untrack(self.pid)


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


def wait_closed(port: int, what: str, timeout: float = 10.0) -> None:
    """Wait until nothing listens on ``port`` any more."""
    deadline = time.monotonic() + timeout
    while port_open(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} still open after stopping {what}")
        time.sleep(0.05)


def restarter(
    procs: Sequence[Process],
    port: int,
    check: Callable[[], bool],
    what: str,
    *,
    keep: Sequence[Process] = (),
    timeout: float = 90.0,
) -> Callable[[bool], tuple[int, ...]]:
    """A restart for :attr:`Broker._restart`: stop ``procs`` (SIGTERM, or SIGKILL when
    ``hard``), wait until ``port`` is closed, start them again with the same arguments
    and wait for ``check``. ``keep`` (an epmd, a storage server) keeps running.
    Returns the process ids of ``keep`` and ``procs``."""

    def restart(hard: bool) -> tuple[int, ...]:
        for proc in reversed(procs):
            if hard:
                proc.kill()
            else:
                proc.stop()
        wait_closed(port, what)
        for proc in procs:
            proc.respawn()
        wait_ready(procs, check, timeout, f"{what} (restarted)")
        return tuple(p.pid for p in [*keep, *procs])

    return restart


def stopper(procs: Sequence[Process], port: int) -> Callable[[], None]:
    """Stop ``procs`` (last started first) and check the port is closed afterwards."""

    def stop() -> None:
        for proc in reversed(procs):
            proc.stop()
        wait_closed(port, ", ".join(p.name for p in procs) or "the broker")

    return stop

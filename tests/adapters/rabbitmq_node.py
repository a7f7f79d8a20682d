"""A private RabbitMQ node for fault tests: close its connections, kill it, restart it.

The node comes from the conformance suite's launcher (its own epmd, ports, Mnesia dir
and HOME), so the machine's broker is never touched. The node's environment is read
back from the running server process, which lets this helper run the package's own
``rabbitmqctl`` against it (same node name, epmd port and Erlang cookie) and restart
it after a SIGKILL on the same port and data directory.

Every method blocks: call it through :func:`asyncio.to_thread` from a test coroutine,
so the adapter under test keeps running on the event loop meanwhile.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
from pathlib import Path

from polybus_conformance.provisioning.base import Broker, Process, port_open, wait_ready
from polybus_conformance.provisioning.rabbitmq import (
    SERVER_SCRIPTS,
    RabbitMQLauncher,
    amqp_ready,
)

_NODE_ENV = ("HOME", "ERL_EPMD_PORT")


def _ctl_program() -> str:
    # the package's own script: /usr/sbin/rabbitmqctl switches to the rabbitmq user,
    # whose HOME holds another Erlang cookie than the private node's
    found = sorted(glob.glob(SERVER_SCRIPTS.replace("rabbitmq-server", "rabbitmqctl")))
    if not found:
        raise FileNotFoundError("rabbitmqctl of the rabbitmq-server package")
    return found[-1]


class PrivateNode:
    """One private node; ``url`` stays valid across :meth:`kill_and_restart`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker: Broker = RabbitMQLauncher().start(workdir)
        self.url = self.broker.url
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))
        server_pid = self.broker.pids[-1]
        raw = Path(f"/proc/{server_pid}/environ").read_bytes().split(b"\0")
        pairs = (item.decode().split("=", 1) for item in raw if b"=" in item)
        self.env = {k: v for k, v in pairs if k.startswith("RABBITMQ_") or k in _NODE_ENV}
        self._group = server_pid
        self._restarted: Process | None = None

    @property
    def node_name(self) -> str:
        return self.env["RABBITMQ_NODENAME"]

    def rabbitmqctl(self, *args: str) -> str:
        """Run ``rabbitmqctl -n NODE args``; its output, or an error with its output."""
        done = subprocess.run(
            [_ctl_program(), "-n", self.node_name, *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr[-800:]}")
        return done.stdout

    def connection_count(self) -> int:
        out = self.rabbitmqctl("list_connections", "--silent", "pid")
        return len([line for line in out.splitlines() if line.strip()])

    def close_all_connections(self) -> None:
        """Force-close every client connection; the node keeps running."""
        self.rabbitmqctl("close_all_connections", "polybus fault test")

    def kill(self) -> None:
        """SIGKILL the node (no clean shutdown) and wait until its port is closed."""
        os.killpg(self._group, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while port_open(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {self.port} still open after SIGKILL")
            time.sleep(0.05)
        if self._restarted is not None:
            self._restarted.popen.wait(5)

    def start_again(self, timeout: float = 90.0) -> None:
        """Start the killed node on the same port and data directory; return once it
        accepts logins."""
        program = sorted(glob.glob(SERVER_SCRIPTS))[-1]
        proc = Process(
            "rabbitmq-server (restarted)",
            [program],
            self.workdir / "rabbitmq-server.restarted.log",
            env=self.env,
        )
        self._restarted = proc
        self._group = proc.pid
        wait_ready([proc], lambda: amqp_ready(self.port), timeout, "rabbitmq-server restart")

    def kill_and_restart(self) -> None:
        self.kill()
        self.start_again()

    def stop(self) -> None:
        """Stop the restarted server (if any), then everything the launcher started."""
        if self._restarted is not None:
            self._restarted.stop()
        self.broker.stop()

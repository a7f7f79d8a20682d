"""A private RabbitMQ node with its own epmd.

The node never touches the machine's RabbitMQ: its own node name, ports, Mnesia and
log directories and HOME (for the Erlang cookie) all live under the run's directory.
"""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

from .base import (
    Broker,
    Launcher,
    Process,
    free_port,
    port_open,
    restarter,
    stopper,
    wait_ready,
)

SERVER_SCRIPTS = "/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server"
CONFIG = "loopback_users = none\ndisk_free_limit.absolute = 50MB\n"


def amqp_ready(port: int) -> bool:
    """A full AMQP handshake with the default user."""
    if not port_open(port):
        return False
    import pika

    params = pika.ConnectionParameters(
        host="127.0.0.1",
        port=port,
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=1,
        socket_timeout=2,
        blocked_connection_timeout=2,
    )
    pika.BlockingConnection(params).close()
    return True


class RabbitMQLauncher(Launcher):
    backend = "rabbitmq"
    flavour = "rabbitmq"
    program = "rabbitmq-server and epmd (Debian package rabbitmq-server)"

    def find(self) -> str | None:
        scripts = sorted(glob.glob(SERVER_SCRIPTS))
        if not scripts or shutil.which("epmd") is None:
            return None
        return scripts[-1]

    def start(self, workdir: Path, timeout: float = 90.0) -> Broker:
        program = self.find()
        epmd = shutil.which("epmd")
        if program is None or epmd is None:
            raise FileNotFoundError(self.program)
        amqp_port, dist_port, epmd_port = free_port(), free_port(), free_port()
        for sub in ("mnesia", "log", "home"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        config = workdir / "rabbitmq.conf"
        config.write_text(CONFIG)
        plugins = workdir / "enabled_plugins"
        plugins.write_text("[].\n")
        epmd_proc = Process(
            "epmd",
            [epmd, "-port", str(epmd_port), "-address", "127.0.0.1"],
            workdir / "epmd.log",
        )
        env = {
            "RABBITMQ_NODENAME": f"polybus{amqp_port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(amqp_port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "ERL_EPMD_PORT": str(epmd_port),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "HOME": str(workdir / "home"),
        }
        node = Process("rabbitmq-server", [program], workdir / "rabbitmq-server.log", env=env)
        procs = [epmd_proc, node]
        wait_ready(procs, lambda: amqp_ready(amqp_port), timeout, "rabbitmq-server")
        stop_all = stopper(procs, amqp_port)

        def stop() -> None:
            stop_all()
            # epmd listens on its own port; it must be gone too
            stopper([], epmd_port)()

        return Broker(
            backend=self.backend,
            url=f"amqp://guest:guest@127.0.0.1:{amqp_port}/",
            flavour=self.flavour,
            origin="local",
            log_dir=workdir,
            pids=tuple(p.pid for p in procs),
            _stop=stop,
            # only the node restarts (its Mnesia directory stays); epmd keeps running
            _restart=restarter(
                [node],
                amqp_port,
                lambda: amqp_ready(amqp_port),
                "rabbitmq-server",
                keep=[epmd_proc],
                timeout=timeout,
            ),
        )

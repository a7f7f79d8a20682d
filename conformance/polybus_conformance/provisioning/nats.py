"""nats-server with JetStream, storing in the run's own directory (file storage, so a
restart keeps streams, consumers and messages)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

from .base import Broker, Launcher, Process, free_port, restarter, stopper, wait_ready


def _jetstream_ready(port: int) -> bool:
    """The server's INFO greeting must advertise JetStream."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.settimeout(1)
        line = sock.makefile("rb").readline()
    if not line.startswith(b"INFO "):
        return False
    info = json.loads(line[5:])
    return bool(info.get("jetstream"))


class NatsLauncher(Launcher):
    backend = "nats"
    flavour = "nats-server"
    program = "nats-server (Debian package nats-server)"

    def find(self) -> str | None:
        return shutil.which("nats-server") or (
            "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").is_file() else None
        )

    def start(self, workdir: Path, timeout: float = 30.0) -> Broker:
        program = self.find()
        if program is None:
            raise FileNotFoundError(self.program)
        port = free_port()
        # a store per server: two sessions sharing a workdir must not share JetStream
        # files; the data dies with this private server (its log is kept)
        store = workdir / f"jetstream-{port}"
        store.mkdir(parents=True, exist_ok=True)
        proc = Process(
            "nats-server",
            [program, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
            workdir / "nats-server.log",
        )
        wait_ready([proc], lambda: _jetstream_ready(port), timeout, "nats-server")
        stop_server = stopper([proc], port)

        def stop() -> None:
            stop_server()
            shutil.rmtree(store, ignore_errors=True)

        return Broker(
            backend=self.backend,
            url=f"nats://127.0.0.1:{port}",
            flavour=self.flavour,
            origin="local",
            log_dir=workdir,
            pids=tuple(p.pid for p in [proc]),
            _stop=stop,
            # the store directory stays: JetStream streams and consumers survive
            _restart=restarter([proc], port, lambda: _jetstream_ready(port), "nats-server"),
        )

"""redis-server, private to the run: no persistence for the shared broker; an
append-only file (fsync every second) for the restartable one, so a restart keeps
streams, groups and entries."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from .base import Broker, Launcher, Process, free_port, restarter, stopper, wait_ready


def _pong(port: int) -> bool:
    """The server answers PING (it also answers while loading its data: -LOADING)."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.settimeout(1)
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")


class RedisLauncher(Launcher):
    backend = "redis"
    flavour = "redis-server"
    program = "redis-server (Debian package redis-server)"

    def __init__(self, persistent: bool = False) -> None:
        self.persistent = persistent

    def find(self) -> str | None:
        return shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None
        )

    def start(self, workdir: Path, timeout: float = 30.0) -> Broker:
        program = self.find()
        if program is None:
            raise FileNotFoundError(self.program)
        port = free_port()
        data = workdir / f"redis-{port}"  # per server: two sessions never share files
        data.mkdir(parents=True, exist_ok=True)
        argv = [program, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data)]
        argv += ["--save", ""]
        if self.persistent:
            argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            argv += ["--appendonly", "no"]
        proc = Process("redis-server", argv, workdir / f"redis-server-{port}.log")
        wait_ready([proc], lambda: _pong(port), timeout, "redis-server")
        stop_server = stopper([proc], port)

        def stop() -> None:
            stop_server()
            shutil.rmtree(data, ignore_errors=True)

        # the restartable broker's URL says that polybus may count on its persistence
        # (the adapter checks the server's appendonly setting when it connects)
        query = "?require_persistence=true" if self.persistent else ""
        return Broker(
            backend=self.backend,
            url=f"redis://127.0.0.1:{port}{query}",
            flavour=self.flavour,
            origin="local",
            log_dir=workdir,
            pids=(proc.pid,),
            _stop=stop,
            _restart=restarter([proc], port, lambda: _pong(port), "redis-server"),
        )

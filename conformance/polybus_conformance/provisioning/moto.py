"""moto server: SQS and SNS over HTTP, as boto3 talks to AWS.

moto accepts any credentials, but boto3 refuses to sign without some: when none are
configured the launcher sets dummy ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in
this process (never overriding real ones).
"""

from __future__ import annotations

import os
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

REGION = "us-east-1"

# SQS's default visibility timeout is 30 s: a test of a consumer that died (or of a
# message left unsettled) would wait that long for the redelivery. A shorter timeout is
# test speed only, the redelivery mechanism is unchanged (like tansu's group timings).
TEST_VISIBILITY = "visibility_timeout=5"


def _sqs_ready(port: int) -> bool:
    if not port_open(port):
        return False
    import boto3

    client = boto3.client(
        "sqs",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="conformance",
        aws_secret_access_key="conformance",
    )
    client.list_queues()
    return True


class MotoLauncher(Launcher):
    backend = "sqs"
    flavour = "moto"
    program = "moto_server (pip install 'moto[server]')"

    def find(self) -> str | None:
        return shutil.which("moto_server")

    def start(self, workdir: Path, timeout: float = 30.0) -> Broker:
        program = self.find()
        if program is None:
            raise FileNotFoundError(self.program)
        port = free_port()
        proc = Process(
            "moto_server", [program, "-H", "127.0.0.1", "-p", str(port)], workdir / "moto.log"
        )
        wait_ready([proc], lambda: _sqs_ready(port), timeout, "moto_server")
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "conformance")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "conformance")
        endpoint = f"http://127.0.0.1:{port}"
        return Broker(
            backend=self.backend,
            url=f"sqs://?region={REGION}&endpoint_url={endpoint}&{TEST_VISIBILITY}",
            flavour=self.flavour,
            origin="local",
            log_dir=workdir,
            pids=tuple(p.pid for p in [proc]),
            _stop=stopper([proc], port),
            # moto keeps everything in memory: a restart starts it empty
            _restart=restarter([proc], port, lambda: _sqs_ready(port), "moto_server"),
        )

"""Each local broker launcher starts a real broker, a real client talks to it, and the
stop leaves no process and no open port behind."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from polybus_conformance.provisioning import LAUNCHERS, Broker, Unavailable, provision
from polybus_conformance.provisioning.base import port_open
from polybus_conformance.provisioning.nats import NatsLauncher

pytestmark = pytest.mark.timeout(180)


def _port(broker: Broker) -> int:
    parts = urlsplit(broker.url)
    query = parse_qs(parts.query)
    for name in ("endpoint_url", "emulator"):
        if name in query:
            return int(query[name][0].rsplit(":", 1)[1])
    assert parts.port is not None
    return parts.port


def _kafka(broker: Broker) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{_port(broker)}"})
    futures = admin.create_topics([NewTopic("provisioning-check", num_partitions=2)])
    futures["provisioning-check"].result(timeout=10)
    assert "provisioning-check" in admin.list_topics(timeout=10).topics


def _rabbitmq(broker: Broker) -> None:
    import pika

    params = pika.URLParameters(broker.url)
    conn = pika.BlockingConnection(params)
    try:
        channel = conn.channel()
        channel.queue_declare(
            "provisioning-check", durable=True, arguments={"x-queue-type": "quorum"}
        )
        channel.confirm_delivery()
        channel.basic_publish("", "provisioning-check", b"hello")
        method, _, body = channel.basic_get("provisioning-check", auto_ack=True)
        assert method is not None
        assert body == b"hello"
    finally:
        conn.close()


def _nats(broker: Broker) -> None:
    with socket.create_connection(("127.0.0.1", _port(broker)), timeout=5) as sock:
        info = json.loads(sock.makefile("rb").readline()[5:])
    assert info["jetstream"] is True


def _sqs(broker: Broker) -> None:
    import boto3

    client = boto3.client(
        "sqs",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{_port(broker)}",
        aws_access_key_id="x",
        aws_secret_access_key="x",  # moto ignores credentials
    )
    url = client.create_queue(QueueName="provisioning-check")["QueueUrl"]
    client.send_message(QueueUrl=url, MessageBody="hello")
    got = client.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    assert got[0]["Body"] == "hello"


def _pubsub(broker: Broker) -> None:
    from google.cloud import pubsub_v1

    host = f"127.0.0.1:{_port(broker)}"
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    try:
        publisher = pubsub_v1.PublisherClient()
        topic = publisher.topic_path("polybus-conformance", "provisioning-check")
        created = publisher.create_topic(name=topic)
        assert created.name == topic
    finally:
        del os.environ["PUBSUB_EMULATOR_HOST"]


def _redis(broker: Broker) -> None:
    with socket.create_connection(("127.0.0.1", _port(broker)), timeout=5) as sock:
        sock.sendall(b"XADD provisioning-check * body hello\r\nXLEN provisioning-check\r\n")
        replies = sock.makefile("rb")
        assert replies.readline().startswith(b"$")  # the entry id
        replies.readline()
        assert replies.readline() == b":1\r\n"


CHECKS: dict[str, Callable[[Broker], None]] = {
    "kafka": _kafka,
    "rabbitmq": _rabbitmq,
    "nats": _nats,
    "sqs": _sqs,
    "pubsub": _pubsub,
    "redis": _redis,
}


@pytest.mark.parametrize("backend", sorted(LAUNCHERS))
def test_launcher_starts_and_stops(backend: str, tmp_path: Path) -> None:
    launcher = LAUNCHERS[backend]
    if launcher.find() is None:
        pytest.fail(f"{launcher.program} is not installed on this machine")
    broker = launcher.start(tmp_path)
    stopped = False
    try:
        assert broker.backend == backend
        assert broker.flavour == launcher.flavour
        assert broker.origin == "local"
        port = _port(broker)
        assert port_open(port)
        CHECKS[backend](broker)
        pids = _pids(tmp_path, set(broker.pids))
        assert pids, "found no process of the broker"
        broker.stop()
        stopped = True
        assert not port_open(port), "the port is still open after stop"
        alive = [pid for pid in pids if _alive(pid)]
        assert not alive, f"processes still running after stop: {alive}"
        assert any(p.suffix == ".log" for p in tmp_path.rglob("*")), "logs must be kept"
    finally:
        if not stopped:
            broker.stop()


def _pids(workdir: Path, launched: set[int]) -> list[int]:
    """The broker's processes: those it launched, their process groups, and any process
    whose command line mentions ``workdir`` (other tests' servers are left out)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, pgrp = int(entry.name), int(stat[2])
        if str(workdir).encode() in cmdline or pid in launched or pgrp in launched:
            found.append(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_explicit_url_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POLYBUS_NATS_URL", "nats://broker.example:4222")
    monkeypatch.setenv("POLYBUS_NATS_FLAVOUR", "synadia-cloud")
    broker = provision("nats", tmp_path, use_docker=False)
    assert broker.url == "nats://broker.example:4222"
    assert broker.flavour == "synadia-cloud"
    assert broker.origin == "url"
    assert not list(tmp_path.iterdir()), "nothing may be started for an explicit URL"


def test_explicit_url_default_flavour_is_the_product(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("POLYBUS_KAFKA_URL", "kafka://broker.example:9092")
    monkeypatch.delenv("POLYBUS_KAFKA_FLAVOUR", raising=False)
    assert provision("kafka", tmp_path, use_docker=False).flavour == "apache-kafka"


class _NotInstalled(NatsLauncher):
    def find(self) -> str | None:
        return None


def test_missing_program_gives_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("POLYBUS_NATS_URL", raising=False)
    monkeypatch.setitem(LAUNCHERS, "nats", _NotInstalled())
    with pytest.raises(Unavailable, match=r"nats-server .* is not installed"):
        provision("nats", tmp_path, use_docker=False)


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'kafak'"):
        provision("kafak", tmp_path)

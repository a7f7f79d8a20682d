"""Brokers as containers through testcontainers, used only when a Docker daemon answers.

This path cannot run on machines without a Docker engine; it is kept small. Modules
are imported from ``testcontainers.community`` (testcontainers 4.15 layout) lazily,
so nothing here is imported unless a daemon answered the ping.
"""

from __future__ import annotations

import importlib
import os
import socket
from typing import Any

from .base import Broker

# backend -> (module, class, flavour)
IMAGES: dict[str, tuple[str, str, str]] = {
    "kafka": ("testcontainers.community.kafka", "KafkaContainer", "apache-kafka"),
    "rabbitmq": ("testcontainers.community.rabbitmq", "RabbitMqContainer", "rabbitmq"),
    "sqs": ("testcontainers.community.localstack", "LocalStackContainer", "localstack"),
    "pubsub": ("testcontainers.community.google", "PubSubContainer", "pubsub-emulator"),
    "nats": ("testcontainers.community.nats", "NatsContainer", "nats-server"),
    "redis": ("testcontainers.community.redis", "RedisContainer", "redis-server"),
}
LOCALSTACK_IMAGE = "localstack/localstack:3.8"
"""Pinned: recent LocalStack images want an auth token."""


def docker_answers(timeout: float = 2.0) -> bool:
    """True when a Docker daemon answers ``GET /_ping`` within ``timeout`` seconds.

    Spoken directly over the socket (unix, or ``DOCKER_HOST=tcp://``) so that a missing
    daemon costs one refused connection and leaves no client object behind.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            address: str | tuple[str, int] = host.removeprefix("unix://")
        elif host.startswith("tcp://"):
            name, _, port = host.removeprefix("tcp://").rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            address = (name, int(port))
        else:
            return False
        with sock:
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(64)
    except (OSError, ValueError):
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply


def start(backend: str) -> Broker:
    """Start ``backend``'s container and return the broker (stopping removes it)."""
    module_name, class_name, flavour = IMAGES[backend]
    cls = getattr(importlib.import_module(module_name), class_name)
    container: Any
    if backend == "sqs":
        container = cls(image=LOCALSTACK_IMAGE).with_services("sqs", "sns")
    elif backend == "nats":
        container = cls(jetstream=True)
    else:
        container = cls()
    container.start()
    if backend == "kafka":
        url = f"kafka://{container.get_bootstrap_server()}"
    elif backend == "rabbitmq":
        host, port = container.get_container_host_ip(), container.get_exposed_port(5672)
        url = f"amqp://guest:guest@{host}:{port}/"
    elif backend == "sqs":
        url = f"sqs://?region=us-east-1&endpoint_url={container.get_url()}"
    elif backend == "pubsub":
        url = f"pubsub://polybus-conformance?emulator={container.get_pubsub_emulator_host()}"
    elif backend == "redis":
        host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
        url = f"redis://{host}:{port}"
    else:
        url = container.nats_uri()
    return Broker(backend, url, flavour, "container", _stop=container.stop)

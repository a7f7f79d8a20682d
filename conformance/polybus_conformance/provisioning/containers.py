"""Brokers as containers through testcontainers, used only when a Docker daemon answers.

This path cannot run on machines without a Docker engine; it is kept small. Modules
are imported from ``testcontainers.community`` (testcontainers 4.15 layout) lazily,
so nothing here is imported unless a daemon answered the ping.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Broker

# backend -> (module, class, flavour)
IMAGES: dict[str, tuple[str, str, str]] = {
    "kafka": ("testcontainers.community.kafka", "KafkaContainer", "apache-kafka"),
    "rabbitmq": ("testcontainers.community.rabbitmq", "RabbitMqContainer", "rabbitmq"),
    "sqs": ("testcontainers.community.localstack", "LocalStackContainer", "localstack"),
    "pubsub": ("testcontainers.community.google", "PubSubContainer", "pubsub-emulator"),
    "nats": ("testcontainers.community.nats", "NatsContainer", "nats-server"),
}
LOCALSTACK_IMAGE = "localstack/localstack:3.8"
"""Pinned: recent LocalStack images want an auth token."""


def docker_answers(timeout: float = 2.0) -> bool:
    """True when a Docker daemon answers a ping within ``timeout`` seconds."""
    try:
        import docker

        client = docker.from_env(timeout=int(max(1, timeout)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no SDK, no socket, no daemon: all mean "no Docker"
        return False


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
    else:
        url = container.nats_uri()
    return Broker(backend, url, flavour, "container", _stop=container.stop)

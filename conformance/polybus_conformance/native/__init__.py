"""Plain native clients for the foreign-message tests: they publish into a topic polybus
declared, and read what polybus published, the way a service in another language would,
through each broker's own client and the names the adapter READMEs document.

For a topic name made of lower-case letters, digits and hyphens (as the suite's names are)
the native resource is the polybus name itself: Kafka topic ``T``, RabbitMQ fanout
exchange ``T``, JetStream subject ``polybus.T`` (stream ``polybus-T``), SNS topic ``T``
(``T.fifo`` in FIFO mode), Pub/Sub topic ``projects/P/topics/T``, Redis
stream ``polybus:T``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["NativeClient", "NativeMessage", "Reader", "client"]


@dataclass(frozen=True, slots=True)
class NativeMessage:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    key: str | None = None


class Reader(Protocol):
    """A native subscription made before polybus publishes: it receives what follows."""

    async def read(self, count: int, timeout: float) -> list[NativeMessage]:  # noqa: ASYNC109
        """``count`` messages, or fewer if ``timeout`` seconds pass without one."""
        ...

    async def close(self) -> None: ...


class NativeClient(Protocol):
    async def publish(
        self, topic: str, body: bytes, headers: dict[str, str], key: str | None
    ) -> None:
        """Publish one message with the broker's own client (no polybus headers)."""
        ...

    async def reader(self, topic: str) -> Reader: ...

    async def close(self) -> None: ...


_MODULES = {
    "kafka": "kafka_client",
    "rabbitmq": "rabbitmq_client",
    "nats": "nats_client",
    "sqs": "sqs_client",
    "pubsub": "pubsub_client",
    "redis": "redis_client",
}


def client(backend: str, url: str) -> NativeClient:
    """The native client of ``backend`` for the broker at ``url`` (a polybus URL)."""
    module = importlib.import_module(f"{__name__}.{_MODULES[backend]}")
    made: NativeClient = module.Client(url)
    return made

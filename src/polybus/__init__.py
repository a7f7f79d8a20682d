"""polybus: one producer/consumer API over Kafka, RabbitMQ, SQS/SNS, Pub/Sub and NATS.

::

    import polybus

    async with polybus.connect() as bus:           # POLYBUS_URL, a TOML file, or memory://
        await bus.publish("orders", {"id": 7}, key="order-7")
        async with bus.subscribe("orders", group="fulfilment") as sub:
            async for msg in sub:
                await msg.ack()
"""

from . import errors, headers, stores, sync
from ._bus import Bus, connect
from ._lag import Lag
from ._message import Envelope, Message, Outgoing
from ._pipeline.supervision import Health
from ._subscription import DeliveryMode, Subscription
from ._worker import Handler, Middleware, Worker, chain
from .capabilities import Capabilities, Ordering
from .errors import (
    BrokerUnavailable,
    BusClosed,
    ConfigError,
    InvalidMessage,
    MessageTooLarge,
    PolybusError,
    PublishError,
    Reject,
    SerializationError,
    SettlementError,
)
from .middleware import (
    CircuitBreaker,
    DeadLetter,
    Idempotency,
    PoisonGuard,
    PublishRetry,
    Retry,
    defaults,
)

__version__ = "0.1.0"

__all__ = [
    "BrokerUnavailable",
    "Bus",
    "BusClosed",
    "Capabilities",
    "CircuitBreaker",
    "ConfigError",
    "DeadLetter",
    "DeliveryMode",
    "Envelope",
    "Handler",
    "Health",
    "Idempotency",
    "InvalidMessage",
    "Lag",
    "Message",
    "MessageTooLarge",
    "Middleware",
    "Ordering",
    "Outgoing",
    "PoisonGuard",
    "PolybusError",
    "PublishError",
    "PublishRetry",
    "Reject",
    "Retry",
    "SerializationError",
    "SettlementError",
    "Subscription",
    "Worker",
    "__version__",
    "chain",
    "connect",
    "defaults",
    "errors",
    "headers",
    "stores",
    "sync",
]

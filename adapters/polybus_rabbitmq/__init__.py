"""polybus's RabbitMQ backend: ``amqp://user:password@host:port/vhost`` (see README.md)."""

from ._adapter import RabbitMQAdapter, capabilities_for
from ._consumer import RabbitMQConsumer
from ._settings import RabbitMQSettings

__all__ = ["RabbitMQAdapter", "RabbitMQConsumer", "RabbitMQSettings", "capabilities_for"]

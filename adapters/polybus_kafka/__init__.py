"""polybus's Kafka backend (``kafka://``) on confluent-kafka. See README.md."""

from ._adapter import KafkaAdapter
from ._settings import KafkaSettings

__all__ = ["KafkaAdapter", "KafkaSettings"]

"""polybus's Google Cloud Pub/Sub backend: ``pubsub://PROJECT[?emulator=host:port]``.

See README.md in this package for settings, topology, naming, ordering and capabilities.
"""

from ._adapter import PubSubAdapter
from ._consumer import PubSubConsumer
from ._settings import PubSubSettings

__all__ = ["PubSubAdapter", "PubSubConsumer", "PubSubSettings"]

"""polybus's ``nats://`` backend: NATS JetStream through nats-py.

See ``README.md`` beside this file for the topology, naming, ordering design and limits.
"""

from ._adapter import NatsAdapter
from ._consumer import NatsConsumer
from ._settings import NatsSettings

__all__ = ["NatsAdapter", "NatsConsumer", "NatsSettings"]

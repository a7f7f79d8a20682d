"""polybus's Redis Streams backend, ``redis://`` (see :mod:`polybus_redis._adapter`)."""

from ._adapter import RedisAdapter
from ._consumer import RedisConsumer
from ._settings import RedisSettings

__all__ = ["RedisAdapter", "RedisConsumer", "RedisSettings"]

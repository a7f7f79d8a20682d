"""polybus's embedded ``memory://`` backend (see :mod:`polybus_memory._adapter`)."""

from ._adapter import MemoryAdapter, MemoryConsumer, MemorySettings

__all__ = ["MemoryAdapter", "MemoryConsumer", "MemorySettings"]

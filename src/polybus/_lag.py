"""A group's lag as the broker reports it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Lag"]


@dataclass(frozen=True, slots=True)
class Lag:
    """How far a group is behind, read from the broker without disturbing the group.

    ``messages``: messages published to the group and not yet settled by it (or the
    closest figure the broker reports; see the backend's README). ``oldest_age``: seconds
    since the oldest of them was published. Either is None where the broker cannot say
    (``Capabilities.lag_messages`` / ``lag_seconds`` tell which).
    """

    messages: int | None
    oldest_age: float | None

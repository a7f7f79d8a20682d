"""What a backend can and cannot do, declared once per adapter.

The conformance suite reads these values: a test that a capability rules out is
skipped with the capability's name as the reason, and an assertion is never weakened
for one backend. Application code can read ``bus.capabilities`` to fail early when it
relies on something the configured backend does not give.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

__all__ = ["Capabilities", "Ordering"]


class Ordering(enum.Enum):
    """The ordering guarantee a backend gives to consumers of one group."""

    NONE = "none"
    """No order at all, not even for one key."""
    PER_KEY = "per_key"
    """Messages with the same key are delivered in publish order, even to several
    competing consumers: a key's next message is not handed out while an earlier one
    is unsettled."""
    PER_QUEUE_SINGLE_CONSUMER = "per_queue_single_consumer"
    """Publish order holds only while exactly one consumer reads the group."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """A frozen declaration of one backend's guarantees. Every field is a promise the
    conformance suite checks on the real broker."""

    ordering: Ordering
    fan_out: bool
    """Every group of a topic receives every message."""
    competing_consumers: bool
    """Within one group, each message goes to one of several consumers."""
    persistent: bool
    """Confirmed messages survive a broker restart."""
    replay: bool
    """Already-acked messages can be read again (log-based backends)."""
    native_delivery_count: bool
    """The broker counts deliveries itself; when False polybus tracks attempts."""
    native_dead_letter: bool
    """The broker moves a message to the dead-letter destination at its delivery limit."""
    delayed_redelivery: bool
    """``nack(delay=d)`` keeps the message away for at least ``d`` seconds."""
    max_delay: float | None = None
    """The longest redelivery delay the backend accepts, if bounded (seconds)."""
    broker_dedup: bool
    """The same message id published twice is delivered once."""
    max_message_size: int
    """The largest encoded message (body plus headers) in bytes."""
    max_headers: int | None = None
    """How many user headers fit, if bounded."""

    def missing(self, *needs: str) -> list[str]:
        """Return the names among ``needs`` this backend does not have.

        A need is a boolean field name, or ``ordering:per_key`` for an ordering level.
        """
        out: list[str] = []
        for need in needs:
            if need.startswith("ordering:"):
                wanted = Ordering(need.split(":", 1)[1])
                if not _ordering_satisfies(self.ordering, wanted):
                    out.append(need)
            elif need not in _BOOL_FIELDS:
                raise ValueError(f"unknown capability {need!r}")
            elif not getattr(self, need):
                out.append(need)
        return out


def _ordering_satisfies(have: Ordering, wanted: Ordering) -> bool:
    rank = {Ordering.NONE: 0, Ordering.PER_QUEUE_SINGLE_CONSUMER: 1, Ordering.PER_KEY: 2}
    return rank[have] >= rank[wanted]


_BOOL_FIELDS = frozenset(f.name for f in fields(Capabilities) if f.type == "bool")

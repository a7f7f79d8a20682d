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
    """What a group asks for, chosen per group at ``subscribe``/``declare`` time.

    The same word means the same thing on every backend; a backend that cannot give
    ``KEY`` refuses it with :class:`~polybus.errors.ConfigError` at the call that asks.
    """

    NONE = "none"
    """No order: the group's consumers share the work, and a consumer may process
    several messages of one key at once (Pulsar's Shared, the parallel consumer's
    UNORDERED). The default on every backend."""
    KEY = "key"
    """Per-key order: messages with the same key are handed out one at a time, in
    publish order; a key's next message waits until the earlier one is settled, even
    across redeliveries (Pulsar's Key_Shared, the parallel consumer's KEY)."""

    @classmethod
    def parse(cls, value: object) -> Ordering:
        """``value`` as an :class:`Ordering` (an instance or its string value)."""
        if isinstance(value, Ordering):
            return value
        try:
            return cls(value)
        except ValueError:
            from .errors import ConfigError

            raise ConfigError(
                "ordering", f"{value!r} is not one of {[o.value for o in cls]}"
            ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """A frozen declaration of one backend's guarantees. Every field is a promise the
    conformance suite checks on the real broker."""

    competing_consumers: bool
    """Within one unordered group, each message goes to one of several consumers, and
    several consumers share the work."""
    key_order: bool
    """Groups may ask for ``ordering="key"``; when False, asking raises ConfigError."""
    key_order_competing: bool
    """A key-ordered group shares its work among several consumers. False: one
    consumer receives at a time and the others stand by (fail-over)."""
    fan_out: bool
    """Every group of a topic receives every message."""
    persistent: bool
    """Confirmed messages survive a broker restart."""
    replay: bool
    """Already-acked messages can be read again (log-based backends)."""
    native_delivery_count: bool
    """The broker counts deliveries itself, across consumer crashes; when False the
    count restarts with a new consumer and polybus's poison guard counts in its store."""
    native_dead_letter: bool
    """The broker itself moves a message to the dead-letter topic when it stops
    redelivering it (a backstop: polybus dead-letters at ``max_deliveries`` itself on
    every backend)."""
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
    max_deliveries: int | None = None
    """The largest ``max_deliveries`` a subscription may ask for, if bounded (the
    broker stops counting deliveries beyond it)."""
    lag_messages: bool = False
    """``bus.lag`` reports how many messages a group has not settled."""
    lag_seconds: bool = False
    """``bus.lag`` reports the age of the oldest message a group has not settled."""
    stable_foreign_ids: bool = True
    """A message published by another (non-polybus) client keeps one ``id`` across its
    redeliveries (the broker has a message identity). False: each delivery of such a
    message gets a fresh id of its own, never one another message can get."""

    def missing(self, *needs: str) -> list[str]:
        """Return the names among ``needs`` (boolean field names) this backend lacks."""
        out: list[str] = []
        for need in needs:
            if need not in _BOOL_FIELDS:
                raise ValueError(f"unknown capability {need!r}")
            if not getattr(self, need):
                out.append(need)
        return out


_BOOL_FIELDS = frozenset(f.name for f in fields(Capabilities) if f.type == "bool")

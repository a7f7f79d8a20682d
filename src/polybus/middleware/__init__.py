"""Reliability middleware for :class:`~polybus.Worker`, outermost first:

1. :class:`PoisonGuard`: dead-letter a message delivered too often, unrun;
2. :class:`DeadLetter`: route permanent errors and exhausted retries to the DLQ;
3. :class:`CircuitBreaker`: stop pulling while most messages fail;
4. :class:`Retry`: jittered exponential backoff for transient errors;
5. :class:`Idempotency`: skip messages already processed.

:func:`defaults` builds that chain. :class:`PublishRetry` is the producer side.
"""

from __future__ import annotations

from typing import Any

from .._backoff import Backoff
from .._worker import Middleware
from ..errors import PERMANENT, ConfigError
from ..stores.base import Store
from ._common import RetriesExhausted, is_permanent
from .breaker import CircuitBreaker
from .deadletter import DeadLetter
from .idempotency import Idempotency, ProcessedIds, Sequences, TimeWindow
from .poison import PoisonGuard
from .publish import PublishRetry
from .retry import Retry

__all__ = [
    "PERMANENT",
    "Backoff",
    "CircuitBreaker",
    "DeadLetter",
    "Idempotency",
    "PoisonGuard",
    "ProcessedIds",
    "PublishRetry",
    "RetriesExhausted",
    "Retry",
    "Sequences",
    "TimeWindow",
    "defaults",
    "is_permanent",
]

_GROUPS: dict[str, tuple[str, ...]] = {
    "poison": ("max_deliveries", "counting"),
    "retry": ("max_attempts", "max_elapsed", "inline_max_delay", "rng"),
    "backoff": ("initial", "multiplier", "max_delay", "jitter"),
    "breaker": ("window", "min_calls", "failure_ratio", "cooldown"),
    "idempotency": ("strategy", "lease", "busy_delay", "atomic"),
    "chain": ("permanent", "breaker"),
}


def defaults(idempotency: Store | None = None, **settings: Any) -> list[Middleware]:
    """The recommended consumer chain, in order: poison guard, dead letter, circuit
    breaker, retry, and idempotency when ``idempotency`` is a store (for example
    ``polybus.stores.SQLiteStore("seen.db")``).

    ``settings`` tune the parts: ``max_deliveries``, ``counting`` (poison guard);
    ``max_attempts``, ``max_elapsed``, ``inline_max_delay``, ``rng`` and the backoff's
    ``initial``, ``multiplier``, ``max_delay``, ``jitter`` (retry); ``window``,
    ``min_calls``, ``failure_ratio``, ``cooldown`` (breaker; ``breaker=False`` leaves
    it out); ``strategy``, ``lease``, ``busy_delay``, ``atomic`` (idempotency);
    ``permanent`` (extra permanent exception types, for retry and dead letter).
    An unknown name raises :class:`~polybus.errors.ConfigError` naming it. The poison
    guard counts in the idempotency store when the backend needs polybus to count.
    """
    known = {name for names in _GROUPS.values() for name in names}
    for name in settings:
        if name not in known:
            raise ConfigError(name, f"unknown middleware setting; known: {sorted(known)}")

    def pick(group: str) -> dict[str, Any]:
        return {k: settings[k] for k in _GROUPS[group] if k in settings}

    permanent = tuple(settings.get("permanent", ()))
    chain: list[Middleware] = [
        PoisonGuard(store=idempotency, **pick("poison")),
        DeadLetter(permanent=permanent),
    ]
    if settings.get("breaker", True):
        chain.append(CircuitBreaker(**pick("breaker")))
    chain.append(Retry(backoff=Backoff(**pick("backoff")), permanent=permanent, **pick("retry")))
    if idempotency is not None:
        chain.append(Idempotency(idempotency, **pick("idempotency")))
    elif pick("idempotency"):
        raise ConfigError("idempotency", "idempotency settings given without a store")
    return chain

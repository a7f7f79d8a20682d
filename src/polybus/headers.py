"""Header names polybus reserves. Public constants: middleware and adapters read them.

Every reserved name starts with ``polybus-``. A user header with that prefix is refused
at publish time (:class:`polybus.errors.InvalidMessage`), so polybus metadata can never
be confused with application data.
"""

from __future__ import annotations

PREFIX = "polybus-"

# Envelope fields, carried as headers by adapters whose broker has no native field.
ID = "polybus-id"
KEY = "polybus-key"
CONTENT_TYPE = "polybus-content-type"
PUBLISHED_AT = "polybus-published-at"
"""Publish time, milliseconds since the Unix epoch, as a decimal string."""
REPLAY = "polybus-replay"
"""How many times a dead letter was replayed; part of the broker dedup id, so a replay
inside a broker's dedup window is not discarded as a duplicate of the original."""
REPLAY_GROUP = "polybus-replay-group"
"""The group a replayed dead letter is meant for: every other group of the topic
settles it without handing it out, so a replay reaches that group only."""
ATTEMPT = "polybus-attempt"
"""Delivery attempts already made, for backends where polybus counts (retry copies)."""

# Dead-letter metadata, added to the dead-lettered copy.
DLQ_REASON = "polybus-dlq-reason"
DLQ_ERROR_TYPE = "polybus-dlq-error-type"
DLQ_ERROR_MESSAGE = "polybus-dlq-error-message"
DLQ_TRACEBACK = "polybus-dlq-traceback"
DLQ_ORIGINAL_TOPIC = "polybus-dlq-original-topic"
DLQ_ORIGINAL_GROUP = "polybus-dlq-original-group"
DLQ_ATTEMPTS = "polybus-dlq-attempts"
DLQ_FIRST_FAILURE = "polybus-dlq-first-failure"
DLQ_LAST_FAILURE = "polybus-dlq-last-failure"

# Producer-side metadata.
TRACEPARENT = "traceparent"
"""W3C trace context, passed through untouched (not reserved)."""
SEQUENCE = "polybus-sequence"
"""Monotonic per-entity sequence for the sequence idempotency strategy."""


def is_reserved(name: str) -> bool:
    """True if ``name`` is a polybus header that applications may not set."""
    return name.startswith(PREFIX) and name != SEQUENCE

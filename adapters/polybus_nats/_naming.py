"""How polybus names map to JetStream names. Pure functions, no I/O.

JetStream stream and consumer names may hold only letters, digits, ``-`` and ``_``;
subject tokens may not be empty nor hold whitespace, ``*`` or ``>``. So:

- a topic made of dot-separated tokens of ``[A-Za-z0-9_-]`` (``orders``,
  ``orders.created``) keeps its tokens: subject ``<subject_prefix>.orders.created``,
  stream ``<stream_prefix>orders_created``;
- any other topic (spaces, ``/``, non-ASCII, empty tokens) is sanitised: each run of
  disallowed characters becomes ``_`` and a hash of the exact name is appended
  (``my topic`` -> ``my_topic-<10 hex digits>``), for the stream and the subject alike;
- groups become durable consumer names by the same rule.

Two names can sanitise to the same stream (``a.b`` and ``a_b``); polybus records the
exact topic and group names in the stream's and consumer's description, so such a
collision is reported as a conflict instead of silently merging two topics.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["consumer_name", "description", "stream_name", "subject"]

_VALID = re.compile(r"[A-Za-z0-9_-]+")
_INVALID_RUN = re.compile(r"[^A-Za-z0-9_-]+")
MAX_NAME = 64
"""Longest sanitised part kept before the hash (stream names become file names)."""


def _hashed(name: str) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
    readable = _INVALID_RUN.sub("_", name)[:MAX_NAME].strip("_") or "x"
    return f"{readable}-{digest}"


def _dotted_tokens(topic: str) -> list[str] | None:
    tokens = topic.split(".")
    if len(topic) <= MAX_NAME and all(_VALID.fullmatch(t) for t in tokens):
        return tokens
    return None


def stream_name(prefix: str, topic: str) -> str:
    """The stream that stores ``topic``."""
    tokens = _dotted_tokens(topic)
    return prefix + ("_".join(tokens) if tokens is not None else _hashed(topic))


def subject(prefix: str, topic: str) -> str:
    """The subject ``topic`` is published on (the stream's only subject)."""
    tokens = _dotted_tokens(topic)
    return f"{prefix}.{topic if tokens is not None else _hashed(topic)}"


def consumer_name(group: str) -> str:
    """The durable pull consumer that is ``group``."""
    if len(group) <= MAX_NAME and _VALID.fullmatch(group):
        return group
    return _hashed(group)


def description(kind: str, name: str) -> str:
    """The description polybus writes on streams and consumers it creates; it names the
    exact topic or group so that a sanitisation collision is detected."""
    return f"polybus {kind} {name!r}"

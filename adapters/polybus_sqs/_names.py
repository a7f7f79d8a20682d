"""SNS topic and SQS queue names for polybus topics and groups (pure functions).

SNS names allow 256 characters, SQS names 80, both only ``A-Z a-z 0-9 _ -`` (plus the
``.fifo`` suffix of FIFO ones). A polybus name that is already valid is used as is
(readable in the AWS console); anything else is sanitised and given a short hash of
the original, so two different polybus names never map to one AWS name.
"""

from __future__ import annotations

import hashlib
import re

SNS_MAX = 256
SQS_MAX = 80
FIFO_SUFFIX = ".fifo"
_INVALID = re.compile(r"[^A-Za-z0-9_-]")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:10]


def _fit(name: str, limit: int, *hash_of: str) -> str:
    """``name`` if valid and short enough, else sanitised, cut and hashed."""
    if not _INVALID.search(name) and len(name) <= limit:
        return name
    clean = _INVALID.sub("-", name)
    return f"{clean[: limit - 11]}-{_digest(*hash_of)}"


def topic_name(prefix: str, topic: str, *, fifo: bool) -> str:
    """The SNS topic name of ``topic``."""
    limit = SNS_MAX - (len(FIFO_SUFFIX) if fifo else 0)
    base = _fit(prefix + topic, limit, prefix, topic)
    return base + FIFO_SUFFIX if fifo else base


def topic_queue_name(prefix: str, topic: str, *, fifo: bool) -> str:
    """The SQS queue that *is* ``topic`` when SNS is skipped (``sns=false``)."""
    limit = SQS_MAX - (len(FIFO_SUFFIX) if fifo else 0)
    base = _fit(prefix + topic, limit, prefix, topic)
    return base + FIFO_SUFFIX if fifo else base


def group_queue_name(prefix: str, topic: str, group: str, *, fifo: bool) -> str:
    """The SQS queue of ``group`` on ``topic``: readable parts plus a hash of the pair
    (``a__b`` + ``c`` and ``a`` + ``b__c`` must not meet)."""
    limit = SQS_MAX - (len(FIFO_SUFFIX) if fifo else 0) - 11
    half = (limit - len(prefix) - 2) // 2
    t = _INVALID.sub("-", topic)[:half]
    g = _INVALID.sub("-", group)[: limit - len(prefix) - 2 - len(t)]
    base = f"{prefix}{t}--{g}-{_digest(prefix, topic, group)}"
    return base + FIFO_SUFFIX if fifo else base

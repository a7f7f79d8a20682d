"""SNS topic and SQS queue names for polybus topics and groups (pure functions).

SNS names allow 256 characters, SQS names 80, both only ``A-Z a-z 0-9 _ -`` (plus the
``.fifo`` suffix of FIFO ones, counted in the limit). :func:`polybus.spi.fit_name`
keeps a valid name as is (readable in the AWS console) and makes any other valid and
distinct with a hash of the exact name.
"""

from __future__ import annotations

import hashlib
import re

from polybus.spi import fit_name

ALLOWED = "A-Za-z0-9_-"
_REFUSED = re.compile(f"[^{ALLOWED}]")
SNS_MAX = 256
SQS_MAX = 80
FIFO_SUFFIX = ".fifo"


def _fit(name: str, limit: int, fifo: bool) -> str:
    suffix = FIFO_SUFFIX if fifo else ""
    return fit_name(name, allowed=ALLOWED, max_length=limit, suffix=suffix, replacement="-")


def topic_name(prefix: str, topic: str, *, fifo: bool) -> str:
    """The SNS topic name of ``topic``."""
    return _fit(prefix + topic, SNS_MAX, fifo)


def topic_queue_name(prefix: str, topic: str, *, fifo: bool) -> str:
    """The SQS queue that *is* ``topic`` when SNS is skipped (``sns=false``)."""
    return _fit(prefix + topic, SQS_MAX, fifo)


def group_queue_name(prefix: str, topic: str, group: str, *, fifo: bool) -> str:
    """The SQS queue of ``group`` on ``topic``: ``<prefix><topic>--<group>-<hash>``.

    The hash is of the exact (prefix, topic, group), so ``a--b`` + ``c`` and ``a`` +
    ``b--c`` never meet, and so the readable parts may show each refused character as
    ``-`` (``orders-billing-dlq--polybus-dlq-<hash>``: the names of earlier versions
    of this adapter); a name still too long is fitted as a whole.
    """
    digest = hashlib.sha256(f"{prefix}\x00{topic}\x00{group}".encode()).hexdigest()[:10]
    readable = _REFUSED.sub("-", f"{prefix}{topic}--{group}")
    return _fit(f"{readable}-{digest}", SQS_MAX, fifo)

"""Shared helpers of the Pub/Sub adapter tests. The emulator itself comes from the
``pubsub_url`` fixture (``conftest.py``)."""

from __future__ import annotations

import uuid


def name(label: str) -> str:
    """A unique topic or group name."""
    return f"t-{label}-{uuid.uuid4().hex[:8]}"

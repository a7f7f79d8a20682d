"""Small helpers shared by the core tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import uuid

import polybus

WAIT = 5.0
"""Deadline for a message that must arrive: reaching it fails the test."""

QUIET = 0.3
"""How long to wait for a message that must *not* arrive. A shorter wait can only make
such a test pass wrongly, never fail wrongly, so it is not a readiness gate."""


def name(prefix: str = "topic") -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def drain(sub: polybus.Subscription, count: int) -> list[polybus.Message]:
    """Receive and ack ``count`` messages, each within :data:`WAIT`."""
    out = []
    for _ in range(count):
        msg = await sub.get(timeout=WAIT)
        await msg.ack()
        out.append(msg)
    return out

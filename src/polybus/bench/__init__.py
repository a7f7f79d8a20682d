"""Benchmarks: the SDK and the raw client side by side, in one run.

Each adapter package may ship a module ``polybus_<backend>.bench`` with a function
``raw_baseline() -> RawBaseline``: the same work done with the native client and the
same guarantees (confirmed publish, durable destination, one ack per message). The
harness (``polybus bench BACKEND``) alternates SDK and raw rounds and reports medians.
"""

from __future__ import annotations

from typing import Protocol


class RawBaseline(Protocol):
    """The raw-client side of a benchmark. Called from one event loop, in this order:
    ``setup`` once, then rounds of ``publish`` / ``consume`` / ``round_trip``, then
    ``teardown``. Blocking clients run in threads; the timing includes that cost, as it
    does for the SDK."""

    async def setup(self, url: str, topic: str, group: str) -> None:
        """Connect and create ``topic`` and ``group`` (so that published messages reach
        the group), with the same durability the SDK uses for this backend."""

    async def publish(self, bodies: list[bytes]) -> None:
        """Publish every body and return once the broker confirmed all of them."""

    async def consume(self, count: int) -> float | None:
        """Receive and ack ``count`` messages (already published), one ack each. May
        return the seconds the work itself took (a Worker measured from its first
        settlement to its last, without its start-up); None: the call is timed."""

    async def round_trip(self, body: bytes) -> None:
        """Publish one message (confirmed), receive it and ack it: one latency sample."""

    async def teardown(self) -> None:
        """Disconnect; deleting what setup created is optional."""


# Optional, found with getattr: ``async def publish_concurrent(bodies)`` publishes the
# wave of the concurrent phase (the SDK: one ``publish`` call per body, all at once;
# without it the wave goes to ``publish``, the raw client's pipelined form), and
# ``async def end_round()`` runs after a round's latency samples.

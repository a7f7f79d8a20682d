"""Per-backend timing profiles: how long to wait for a message, how long to watch
for messages that must not come, and how many messages the volume tests use.

These are deadlines for failure, not speed assertions: a healthy backend delivers
long before ``idle_timeout``; only a missing message makes a test wait that long.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    idle_timeout: float
    """Longest wait for the next expected message before the test fails."""
    quiet: float
    """How long a test watches for a message that must not arrive."""
    volume: int
    """Messages in the volume tests (concurrency, fan-out, ordering)."""
    nack_delay: float
    """The delay of the delayed-redelivery test."""
    redelivery_timeout: float
    """Longest wait for an unsettled message of a dead consumer to come back."""
    connect_timeout: float
    """The ``connect_timeout`` given to an unreachable broker in the error tests."""


_REMOTE = Profile(
    idle_timeout=15.0,
    quiet=2.0,
    volume=200,
    nack_delay=2.0,
    redelivery_timeout=60.0,
    connect_timeout=2.0,
)

PROFILES: dict[str, Profile] = {
    "memory": Profile(
        idle_timeout=2.0,
        quiet=0.3,
        volume=200,
        nack_delay=0.5,
        redelivery_timeout=5.0,
        connect_timeout=1.0,
    ),
    # a consumer-group join takes seconds (about half the session timeout)
    "kafka": Profile(
        idle_timeout=30.0,
        quiet=3.0,
        volume=200,
        nack_delay=2.0,
        redelivery_timeout=60.0,
        connect_timeout=2.0,
    ),
    "rabbitmq": _REMOTE,
    "nats": _REMOTE,
    # a dead consumer's entries come back after claim_idle (30 s by default)
    "redis": _REMOTE,
    # moto slows down as a queue fills: keep queues to hundreds of messages
    "sqs": Profile(
        idle_timeout=20.0,
        quiet=3.0,
        volume=100,
        nack_delay=2.0,
        redelivery_timeout=90.0,
        connect_timeout=2.0,
    ),
    "pubsub": Profile(
        idle_timeout=30.0,
        quiet=3.0,
        volume=200,
        nack_delay=2.0,
        redelivery_timeout=90.0,
        connect_timeout=2.0,
    ),
}


def profile(backend: str) -> Profile:
    return PROFILES.get(backend, _REMOTE)

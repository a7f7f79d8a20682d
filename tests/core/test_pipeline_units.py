"""The consumer pipeline's pure parts, without an event loop: per-key gating and the
supervision rule (backoff, reconnect_timeout, health)."""

from __future__ import annotations

import random

import pytest

from polybus import Message
from polybus._pipeline.keys import KeyGate
from polybus._pipeline.supervision import RECONNECT_BACKOFF, Supervisor
from polybus.errors import BrokerUnavailable


def msg(key: str | None, n: int) -> Message:
    return Message(id=f"m{n}", topic="t", body=b"", key=key)


def test_a_key_is_handed_out_once_at_a_time_in_arrival_order() -> None:
    gate = KeyGate()
    a1, a2, a3, b1, free = msg("a", 1), msg("a", 2), msg("a", 3), msg("b", 1), msg(None, 0)
    assert [gate.admit(m) for m in (a1, a2, b1, a3, free)] == [True, False, True, False, True]
    assert len(gate) == 2
    assert gate.release(a2) is None, "a waiting message does not release its key"
    assert gate.release(a1) is a2
    assert gate.release(a2) is a3
    assert gate.release(a3) is None
    assert gate.admit(msg("a", 4)), "the key is free again"
    assert gate.release(free) is None


def test_an_in_place_redelivery_stays_the_current_message_of_its_key() -> None:
    gate = KeyGate()
    first, later = msg("k", 1), msg("k", 2)
    gate.admit(first)
    gate.admit(later)
    again = msg("k", 1)
    gate.replace(first, again)
    assert gate.release(first) is None, "the replaced message no longer holds the key"
    assert gate.release(again) is later


def test_dropping_waiting_messages_keeps_the_others_in_order() -> None:
    gate = KeyGate()
    current, stale, kept = msg("k", 1), msg("k", 2), msg("k", 3)
    for m in (current, stale, kept):
        gate.admit(m)
    assert gate.drop_waiting(lambda m: m is stale) == [stale]
    assert gate.release(current) is kept


def test_backoff_grows_with_jitter_and_health_tells_the_outage() -> None:
    sup = Supervisor("topic=t group=g", reconnect_timeout=float("inf"), rng=random.Random(7))
    assert sup.health.state == "starting"
    delays = [sup.failed(BrokerUnavailable("down")) for _ in range(8)]
    for attempt, delay in enumerate(delays, start=1):
        low, high = RECONNECT_BACKOFF.bounds(attempt)
        assert low <= delay <= high
    assert max(delays) <= RECONNECT_BACKOFF.max_delay
    assert sup.health.state == "reconnecting"
    assert sup.health.last_error == "down"
    assert sup.health.reconnects == 1, "one outage, however many attempts"
    sup.running()
    assert sup.health.healthy
    sup.failed(BrokerUnavailable("again"))
    assert sup.health.reconnects == 2


def test_an_outage_longer_than_reconnect_timeout_is_raised() -> None:
    sup = Supervisor("topic=t group=g", reconnect_timeout=0.0)
    with pytest.raises(BrokerUnavailable, match="reconnect_timeout"):
        sup.failed(BrokerUnavailable("down"))

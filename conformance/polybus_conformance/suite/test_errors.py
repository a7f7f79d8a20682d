"""Catalogue 16: clear errors, and nothing half-published."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from polybus import BrokerUnavailable, ConfigError, MessageTooLarge, Outgoing
from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.markers import NETWORK, needs
from polybus_conformance.provisioning.base import free_port
from polybus_conformance.waiting import collect_ids, expect_nothing

pytestmark = pytest.mark.asyncio

MARGIN = 10.0
"""Slack over connect_timeout: a correctness bound (no hang), not a speed assertion."""


def _with_port(url: str, port: int) -> str:
    """``url`` pointing at ``port`` on loopback: the ``endpoint_url`` or ``emulator``
    option where the URL has one (sqs, pubsub), else the host part."""
    parts = urlsplit(url)
    pairs = [piece.split("=", 1) for piece in parts.query.split("&") if "=" in piece]
    moved = False
    for pair in pairs:
        if pair[0] in ("endpoint_url", "emulator"):
            scheme = "http://" if pair[1].startswith("http://") else ""
            pair[1] = f"{scheme}127.0.0.1:{port}"
            moved = True
    query = "&".join("=".join(pair) for pair in pairs)
    netloc = parts.netloc
    if not moved:
        user, at, _ = netloc.rpartition("@")
        netloc = f"{user}{at}127.0.0.1:{port}"
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _with_option(url: str, name: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{name}={value}"


@needs(NETWORK)
async def test_unreachable_broker(polybus_target: Target) -> None:
    """16 errors: an unreachable broker gives BrokerUnavailable within the connect timeout"""
    timeout = polybus_target.profile.connect_timeout
    url = _with_port(polybus_target.url, free_port())  # nothing listens there
    bus = polybus_target.connect(url, connect_timeout=timeout)
    started = time.monotonic()

    async def first_use() -> None:
        await bus.open()
        await bus.publish("pb-unreachable", b"x")  # lazy clients connect on first use

    with pytest.raises(BrokerUnavailable) as caught:
        await first_use()
    elapsed = time.monotonic() - started
    await bus.close()
    assert elapsed < timeout + MARGIN, f"BrokerUnavailable after {elapsed:.1f}s"
    password = urlsplit(url).password
    if password:
        assert password not in str(caught.value), "the error shows the password"
        assert password not in repr(bus)


async def test_bad_configuration(polybus_target: Target) -> None:
    """16 errors: bad configuration gives ConfigError naming the field"""
    with pytest.raises(ConfigError) as unknown:
        polybus_target.connect(_with_option(polybus_target.url, "no_such_option", "1"))
    assert unknown.value.field == "no_such_option"
    with pytest.raises(ConfigError) as bad_value:
        polybus_target.connect(polybus_target.url, connect_timeout="soon")
    assert bad_value.value.field == "connect_timeout"


async def test_message_too_large(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """16 errors: a too-large message gives MessageTooLarge and nothing is half-published"""
    topic, group = polybus_names.topic(), polybus_names.group()
    producer, consumer = await polybus_bus_factory(), await polybus_bus_factory()
    await consumer.declare(topic, group)
    limit = polybus_target.capabilities.max_message_size
    too_big = b"x" * (limit + 1)
    with pytest.raises(MessageTooLarge) as single:
        await producer.publish(topic, too_big)
    assert single.value.limit == limit
    assert single.value.size > limit
    with pytest.raises(MessageTooLarge):
        await producer.publish_many(
            topic, [Outgoing(b"before"), Outgoing(too_big), Outgoing(b"after")]
        )
    marker = await producer.publish(topic, b"marker")
    async with consumer.subscribe(topic, group=group) as sub:
        received = await collect_ids(
            sub, [marker], idle_timeout=polybus_target.profile.idle_timeout
        )
        await expect_nothing(sub, polybus_target.profile.quiet, why="the failed batch was sent")
    assert [m.body for m in received] == [b"marker"]

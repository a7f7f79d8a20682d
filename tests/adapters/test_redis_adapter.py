"""Redis Streams adapter behaviour against a real redis-server: settings and URLs,
connection errors, persistence read from the server, topology and names, the entry
format, ordering refusal, retention, lag and deleting a group."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
import redis_support as support
from redis_support import bus_fixture, raw_fixture  # noqa: F401 (fixtures)

import polybus
from polybus import Bus, Outgoing
from polybus.errors import BrokerUnavailable, ConfigError, InvalidMessage
from polybus.spi import GroupSpec, Ordering
from polybus_redis import RedisAdapter, RedisSettings

pytestmark = pytest.mark.timeout(60)


def _settings(bus: Bus) -> RedisSettings:
    assert isinstance(bus.adapter, RedisAdapter)
    return bus.adapter.settings


# -- settings and connection ----------------------------------------------------------


def test_url_parts_become_settings_and_the_password_is_never_shown() -> None:
    adapter = polybus.connect("rediss://alice:s3cret@cache.example:6380/3?block=0.5").adapter
    assert isinstance(adapter, RedisAdapter)
    s = adapter.settings
    assert (s.host, s.port, s.db, s.ssl, s.username, s.password) == (
        "cache.example",
        6380,
        3,
        True,
        "alice",
        "s3cret",
    )
    assert s.block == 0.5
    for shown in (repr(s), repr(adapter), s.url):
        assert "s3cret" not in shown
    default = polybus.connect("redis://").adapter
    assert isinstance(default, RedisAdapter)
    assert (default.settings.host, default.settings.port, default.settings.db) == (
        "127.0.0.1",
        6379,
        0,
    )


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("redis://h/notadb", "url"),
        ("redis://a:1,b:2", "url"),
        ("redis://h?claim_idle=0.5", "claim_idle"),
        ("redis://h?block=0", "block"),
        ("redis://h?maxlen=0", "maxlen"),
        ("redis://h?max_message_size=0", "max_message_size"),
        ("redis://h?nope=1", "nope"),
    ],
)
def test_bad_settings_name_the_field(url: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        polybus.connect(url)
    assert caught.value.field == field


def test_client_options_cannot_override_what_polybus_sets() -> None:
    with pytest.raises(ConfigError) as caught:
        polybus.connect("redis://h", options={"socket_timeout": 5})
    assert caught.value.field == "options.socket_timeout"


async def test_unreachable_server_raises_broker_unavailable_in_time() -> None:
    port = support.free_port()
    bus = polybus.connect(f"redis://127.0.0.1:{port}?connect_timeout=1")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=str(port)):
        await bus.open()
    assert time.monotonic() - started < 5


async def test_refused_password_is_a_config_error(tmp_path: Path) -> None:
    with support.private_server(tmp_path, "--requirepass", "right") as url:
        wrong = url.replace("redis://", "redis://:wr0ng@")
        with pytest.raises(ConfigError) as caught:
            await polybus.connect(wrong).open()
        assert caught.value.field == "url"
        assert "wr0ng" not in str(caught.value)
        async with polybus.connect(url.replace("redis://", "redis://:right@")) as bus:
            await bus.declare(support.name("auth"), "g")


async def test_persistence_is_read_from_the_server(redis_url: str, tmp_path: Path) -> None:
    # the shared server keeps no append-only file
    async with polybus.connect(redis_url) as bus:
        assert bus.capabilities.persistent is False
    with pytest.raises(ConfigError) as caught:
        await polybus.connect(redis_url, require_persistence=True).open()
    assert caught.value.field == "require_persistence"
    assert "appendonly no" in str(caught.value)
    with support.private_server(tmp_path, "--appendonly", "yes") as url:
        assert polybus.connect(url).capabilities.persistent is False  # not known before open
        async with polybus.connect(url) as durable:
            assert durable.capabilities.persistent is True
        async with polybus.connect(url, require_persistence=True) as required:
            assert required.capabilities.persistent is True


async def test_a_server_refusing_config_counts_as_not_persistent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = ("--appendonly", "yes", "--rename-command", "CONFIG", "")
    with support.private_server(tmp_path, *args) as url:
        with caplog.at_level(logging.WARNING, logger="polybus.redis"):
            async with polybus.connect(url) as bus:
                assert bus.capabilities.persistent is False
            async with polybus.connect(url, require_persistence=True) as trusted:
                assert trusted.capabilities.persistent is True  # the operator vouches
        assert "refuses CONFIG GET" in caplog.text


# -- topology, names and the entry format ---------------------------------------------


async def test_a_group_starts_at_the_stream_end_and_every_group_gets_every_entry(
    bus: Bus, raw: Any
) -> None:
    topic, first, late = support.name("topo"), support.name("a"), support.name("late")
    await bus.declare(topic, first)
    await bus.declare(topic, first)  # idempotent: keeps its position
    before = await bus.publish(topic, b"before the late group")
    await bus.declare(topic, late)
    after = await bus.publish(topic, b"after")
    key = f"polybus:{topic}"
    assert await raw.type(key) == b"stream"
    groups = {g["name"].decode() for g in await raw.xinfo_groups(key)}
    assert {first, late} <= groups
    for group, expected in ((first, [before, after]), (late, [after])):
        async with bus.subscribe(topic, group=group) as sub:
            got = [await sub.get(timeout=10) for _ in expected]
            await sub.ack_many(got)
        assert [m.id for m in got] == expected


async def test_key_prefix_names_the_stream(redis_url: str, raw: Any) -> None:
    topic = support.name("prefix")
    async with polybus.connect(redis_url, key_prefix="app1/") as bus:
        await bus.declare(topic, "g")
        await bus.publish(topic, b"x")
    assert await raw.xlen(f"app1/{topic}") == 1
    assert not await raw.exists(f"polybus:{topic}")


async def test_a_key_of_another_type_is_a_config_error(bus: Bus, raw: Any) -> None:
    topic = support.name("clash")
    await raw.set(f"polybus:{topic}", "a string")
    with pytest.raises(ConfigError) as caught:
        await bus.declare(topic)
    assert caught.value.field == "topic"
    with pytest.raises(ConfigError):
        await bus.declare(topic, "g")


async def test_entries_carry_the_body_as_is_and_the_envelope_as_fields(bus: Bus, raw: Any) -> None:
    topic = support.name("wire")
    await bus.declare(topic, "g")
    sent = await bus.publish(topic, {"n": 1}, key="k1", headers={"tenant": "acme"})
    ((_, fields),) = await raw.xrange(f"polybus:{topic}")
    assert fields[b"body"] == b'{"n":1}'
    assert fields[b"tenant"] == b"acme"
    assert fields[b"polybus-id"] == sent.encode()
    assert fields[b"polybus-key"] == b"k1"
    assert fields[b"polybus-content-type"] == b"application/json"
    assert fields[b"polybus-published-at"].isdigit()


async def test_a_header_named_body_is_refused_and_nothing_is_sent(bus: Bus, raw: Any) -> None:
    topic = support.name("bodyhdr")
    await bus.declare(topic, "g")
    with pytest.raises(InvalidMessage, match="body"):
        await bus.publish_many(topic, [Outgoing(b"ok"), Outgoing(b"x", headers={"body": "no"})])
    assert await raw.xlen(f"polybus:{topic}") == 0


async def test_maxlen_trims_the_stream(redis_url: str, raw: Any) -> None:
    topic = support.name("trim")
    async with polybus.connect(redis_url, maxlen=10) as bus:
        await bus.declare(topic, "g")
        for _ in range(5):
            await bus.publish_many(topic, [b"x"] * 100)
    # MAXLEN ~ trims whole nodes of the stream: about 10 entries are kept, never 500
    assert await raw.xlen(f"polybus:{topic}") < 200


async def test_ordering_key_is_refused_with_the_reason(bus: Bus) -> None:
    topic = support.name("order")
    assert bus.capabilities.key_order is False
    with pytest.raises(ConfigError) as caught:
        await bus.subscribe(topic, group="g", ordering="key").open()
    assert caught.value.field == "ordering"
    assert "redis" in str(caught.value)
    assert "no key affinity" in str(caught.value)
    assert isinstance(bus.adapter, RedisAdapter)
    with pytest.raises(ConfigError):
        await bus.adapter.declare(topic, GroupSpec(topic, "g", Ordering.KEY))


# -- lag and deleting groups ---------------------------------------------------------


async def test_lag_counts_undelivered_and_pending_entries(bus: Bus) -> None:
    topic, group = support.name("lag"), support.name("g")
    await bus.declare(topic, group)
    assert await bus.lag(topic, group) == polybus.Lag(0, None)
    await bus.publish_many(topic, [f"m{i}" for i in range(5)])
    lag = await bus.lag(topic, group)
    assert lag.messages == 5
    assert lag.oldest_age is not None
    async with bus.subscribe(topic, group=group, max_in_flight=2) as sub:
        held = [await sub.get(timeout=10), await sub.get(timeout=10)]
        await held[0].ack()
        await held[1].nack(delay=20)  # pending (given back, waiting for its delay)
        lag = await bus.lag(topic, group)
    assert lag.messages == 4
    assert lag.oldest_age is not None
    with pytest.raises(ConfigError) as missing:
        await bus.lag(topic, "no-such-group")
    assert missing.value.field == "group"
    with pytest.raises(ConfigError):
        await bus.lag(support.name("nostream"), group)


async def test_delete_group_removes_only_the_group(bus: Bus, raw: Any) -> None:
    topic = support.name("del")
    await bus.declare(topic, "keep")
    await bus.declare(topic, "drop")
    await bus.publish(topic, b"x")
    assert isinstance(bus.adapter, RedisAdapter)
    spec = GroupSpec(topic, "drop")
    await bus.adapter.delete_group(spec)
    await bus.adapter.delete_group(spec)  # idempotent
    await bus.adapter.delete_group(GroupSpec(support.name("nostream"), "drop"))
    groups = {g["name"] for g in await raw.xinfo_groups(f"polybus:{topic}")}
    assert groups == {b"keep"}  # (the dead-letter groups are on the dead-letter topics)
    assert await raw.xlen(f"polybus:{topic}") == 1

"""Pub/Sub adapter logic that needs no broker: settings, capabilities, names, the wire
mapping and the RPC coalescer."""

from __future__ import annotations

import asyncio
import re

import pytest

from polybus import headers
from polybus.errors import ConfigError, InvalidMessage
from polybus.spi import Envelope
from polybus_pubsub import PubSubAdapter
from polybus_pubsub._batch import Coalescer
from polybus_pubsub._names import parked_id, subscription_id, topic_id
from polybus_pubsub._settings import parse
from polybus_pubsub._wire import MAX_ATTRIBUTE_VALUE, decode, encode

PUBSUB_ID = re.compile(r"[A-Za-z][A-Za-z0-9._~+%-]{2,254}")
"""Google's rule for topic and subscription ids (plus: not starting with "goog")."""


def valid_id(resource: str) -> bool:
    return bool(PUBSUB_ID.fullmatch(resource)) and not resource.lower().startswith("goog")


def test_settings_from_url_and_options() -> None:
    s = parse("pubsub://my-project?emulator=127.0.0.1:8085&ack_deadline=20", {"exactly_once": True})
    assert (s.project, s.emulator, s.ack_deadline, s.exactly_once) == (
        "my-project",
        "127.0.0.1:8085",
        20,
        True,
    )


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("pubsub://", "project"),
        ("pubsub://Bad_Project", "project"),
        ("pubsub://p?ack_deadline=5", "ack_deadline"),
        ("pubsub://p?ack_deadline=601", "ack_deadline"),
        ("pubsub://p?emulator=nohostport", "emulator"),
        ("pubsub://p?colour=blue", "colour"),
        ("pubsub://user:hunter2@p", "url"),
        ("pubsub://p?publish_timeout=0", "publish_timeout"),
    ],
)
def test_bad_settings_name_the_field(url: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PubSubAdapter.from_url(url, {})
    assert caught.value.field == field
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "hint"), [("ordering", "ordering='key'"), ("max_lease", "renews")]
)
def test_removed_settings_say_what_replaces_them(name: str, hint: str) -> None:
    for url, options in ((f"pubsub://p?{name}=true", {}), ("pubsub://p", {name: True})):
        with pytest.raises(ConfigError) as caught:
            PubSubAdapter.from_url(url, options)
        assert caught.value.field == name
        assert hint in caught.value.problem


def test_native_options_never_shown() -> None:
    adapter = PubSubAdapter.from_url("pubsub://p", {"options": {"credentials": "s3cr3t"}})
    assert adapter.settings.options == {"credentials": "s3cr3t"}
    assert "s3cr3t" not in repr(adapter.settings)
    assert "s3cr3t" not in repr(adapter)


def test_emulator_host_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9999")
    assert parse("pubsub://p", {}).emulator_host == "127.0.0.1:9999"
    assert parse("pubsub://p?emulator=127.0.0.1:1", {}).emulator_host == "127.0.0.1:1"


def test_capabilities_and_publish_timeout() -> None:
    adapter = PubSubAdapter.from_url("pubsub://p?publish_timeout=5", {})
    caps = adapter.capabilities
    assert (caps.competing_consumers, caps.key_order, caps.key_order_competing) == (
        True,
        True,
        True,
    )
    assert (caps.native_delivery_count, caps.native_dead_letter, caps.delayed_redelivery) == (
        True,
        True,
        True,
    )
    assert (caps.max_delay, caps.max_deliveries, caps.max_headers) == (600, 99, 80)
    assert (caps.fan_out, caps.persistent, caps.replay, caps.broker_dedup) == (
        True,
        True,
        False,
        False,
    )
    assert caps.max_message_size == 9_990_000
    assert caps.stable_foreign_ids
    assert adapter.publish_timeout == 5
    assert not hasattr(adapter, "key_order_refusal")


def test_valid_names_are_kept() -> None:
    assert topic_id("orders.v1-eu_2+x~y") == "orders.v1-eu_2+x~y"
    assert subscription_id("orders", "billing") == "orders~billing"
    assert subscription_id("orders.v1", "polybus-dlq") == "orders.v1~polybus-dlq"


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("a b/c", "a_b_c-"),
        ("7up", "x_7up-"),
        ("google-x", "x_google-x-"),
        ("50%", "x_50_-"),
        ("é", "x__-"),
        ("t" * 300, "t" * 200),
    ],
)
def test_other_names_are_fitted_with_a_hash(name: str, start: str) -> None:
    fitted = topic_id(name)
    assert fitted.startswith(start)
    assert re.search(r"-[0-9a-f]{10}$", fitted)
    assert valid_id(fitted)


def test_short_names_are_padded() -> None:
    assert (topic_id("ab"), topic_id("a")) == ("ab%", "a%%")


TRICKY = [
    "a",
    "ab",
    "a%",
    "ab%",
    "a~b",
    "a~b~c",
    "b~c",
    "x_7up",
    "7up",
    "goog",
    "GOOG1",
    "a b",
    "a_b",
    "é",
    "e",
    "t" * 300,
    "t" * 299 + "u",
    "x%parked",
    "orders",
]


def test_every_id_is_valid_and_names_never_share_one() -> None:
    topics = {topic_id(n) for n in TRICKY}
    parked = {parked_id(n) for n in TRICKY}
    assert len(topics) == len(parked) == len(TRICKY)
    assert not topics & parked, "an adapter resource shares an id with a user's topic"
    pairs = [(t, g) for t in TRICKY for g in TRICKY]
    subs = {subscription_id(t, g) for t, g in pairs}
    assert len(subs) == len(pairs)
    assert not subs & parked, "a parked subscription shares an id with a group's"
    assert all(valid_id(i) for i in topics | parked | subs)


def test_subscription_ids_are_unambiguous() -> None:
    assert subscription_id("a~b", "c") != subscription_id("a", "b~c")
    assert len(subscription_id("t" * 300, "g" * 300)) <= 255


def test_wire_roundtrip_keeps_long_headers_exact() -> None:
    long = "é" * 900 + "x" * 1500  # multi-byte characters across piece boundaries
    env = Envelope(id="m1", body=b"\x00body", key="k1", headers={"trace": long, "a": "b"})
    wire = encode(env)
    assert wire.ordering_key == "k1"
    assert wire.data == b"\x00body"
    assert all(len(v.encode()) <= MAX_ATTRIBUTE_VALUE for v in wire.attributes.values())
    assert headers.KEY not in wire.attributes
    fields, key = decode(wire.attributes, wire.ordering_key)
    assert key == "k1"
    assert fields.id == "m1"
    assert fields.headers == {"trace": long, "a": "b"}
    assert fields.published_at is not None


def test_wire_keeps_an_empty_key_and_no_key_apart() -> None:
    empty = encode(Envelope(id="m", body=b"", key=""))
    none = encode(Envelope(id="m", body=b""))
    assert decode(empty.attributes, empty.ordering_key)[1] == ""
    assert decode(none.attributes, none.ordering_key)[1] is None


@pytest.mark.parametrize(
    "bad",
    [{"goog-x": "v"}, {"a#polybus-part-1": "v"}, {f"h{i}": "v" for i in range(99)}],
)
def test_unpublishable_headers_are_refused(bad: dict[str, str]) -> None:
    with pytest.raises(InvalidMessage):
        encode(Envelope(id="m", body=b"", headers=bad))


async def test_coalescer_batches_concurrent_calls_in_order() -> None:
    sent: list[list[int]] = []

    async def send(items: list[int]) -> None:
        sent.append(items)

    batcher: Coalescer[int] = Coalescer(send, max_items=3)
    await asyncio.gather(batcher.submit([1, 2]), batcher.submit([3, 4]), batcher.submit([5]))
    assert sent == [[1, 2, 3], [4, 5]]


async def test_coalescer_failure_fails_the_rest_of_the_flush() -> None:
    sent: list[list[int]] = []

    async def send(items: list[int]) -> None:
        if 3 in items:
            raise RuntimeError("boom")
        sent.append(items)

    batcher: Coalescer[int] = Coalescer(send, max_items=1, max_bytes=10, weight=lambda _: 4)
    first, second, third = batcher.submit([1]), batcher.submit([3]), batcher.submit([5])
    results = await asyncio.gather(first, second, third, return_exceptions=True)
    assert results[0] is None
    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[2], RuntimeError)  # never sent after an earlier failure
    assert sent == [[1]]


def test_a_batch_is_cut_into_requests_in_order() -> None:
    from google.pubsub_v1 import types as ps

    from polybus_pubsub import _adapter
    from polybus_pubsub._batch import cut

    messages = [ps.PubsubMessage(data=bytes([i]) * 10) for i in range(7)]
    chunks = cut(messages, 3, _adapter.MAX_REQUEST_BYTES, _adapter._request_size)
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert [m for c in chunks for m in c] == messages
    big = [ps.PubsubMessage(data=b"x" * 4_000_000) for _ in range(3)]
    cut_big = cut(big, 1000, _adapter.MAX_REQUEST_BYTES, _adapter._request_size)
    assert [len(c) for c in cut_big] == [2, 1]  # 9.5 MB per request

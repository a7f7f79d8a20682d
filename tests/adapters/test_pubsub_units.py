"""Pub/Sub adapter logic that needs no broker: settings, names, the wire mapping,
the dead-letter policy clamp and the RPC coalescer."""

from __future__ import annotations

import asyncio

import pytest

from polybus import headers
from polybus.errors import ConfigError, InvalidMessage
from polybus.spi import Envelope
from polybus_pubsub import PubSubAdapter
from polybus_pubsub._adapter import native_attempts
from polybus_pubsub._batch import Coalescer
from polybus_pubsub._names import subscription_id, topic_id
from polybus_pubsub._settings import parse
from polybus_pubsub._wire import MAX_ATTRIBUTE_VALUE, decode, encode


def test_settings_from_url_and_options() -> None:
    s = parse("pubsub://my-project?emulator=127.0.0.1:8085&ack_deadline=20", {"ordering": False})
    assert (s.project, s.emulator, s.ack_deadline, s.ordering) == (
        "my-project",
        "127.0.0.1:8085",
        20,
        False,
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
    ],
)
def test_bad_settings_name_the_field(url: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PubSubAdapter.from_url(url, {})
    assert caught.value.field == field
    assert "hunter2" not in str(caught.value)


def test_native_options_never_shown() -> None:
    adapter = PubSubAdapter.from_url("pubsub://p", {"options": {"credentials": "s3cr3t"}})
    assert adapter.settings.options == {"credentials": "s3cr3t"}
    assert "s3cr3t" not in repr(adapter.settings)
    assert "s3cr3t" not in repr(adapter)
    assert adapter.redacted_url() == "pubsub://p"


def test_emulator_host_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9999")
    assert parse("pubsub://p", {}).emulator_host == "127.0.0.1:9999"
    assert parse("pubsub://p?emulator=127.0.0.1:1", {}).emulator_host == "127.0.0.1:1"


def test_valid_names_are_kept() -> None:
    assert topic_id("orders.v1-eu_2+x") == "orders.v1-eu_2+x"
    assert subscription_id("orders", "billing") == "orders~billing"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a b/c", "a%20b%2Fc"),
        ("7up", "x%_7up"),
        ("google-x", "x%_google-x"),
        ("ab", "ab%_"),
        ("50%", "x%_50%25"),
        ("é", "x%_%C3%A9"),
    ],
)
def test_names_are_sanitised(name: str, expected: str) -> None:
    assert topic_id(name) == expected


def test_long_names_are_hashed_and_distinct() -> None:
    first, second = topic_id("t" * 300), topic_id("t" * 299 + "u")
    assert len(first) == 255
    assert first != second


def test_subscription_ids_are_unambiguous() -> None:
    assert subscription_id("a~b", "c") != subscription_id("a", "b~c")


def test_policy_attempts_are_clamped_to_pubsub_range() -> None:
    assert native_attempts(None) == 100
    assert native_attempts(1) == 5
    assert native_attempts(10) == 11
    assert native_attempts(99) == 100
    assert native_attempts(500) == 100


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

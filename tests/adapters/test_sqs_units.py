"""SQS adapter logic that needs no broker: settings, client timeouts, names, the wire
format, batching, capabilities per mode and error translation."""

from __future__ import annotations

import dataclasses
import random
import re
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError

from polybus.errors import BrokerUnavailable, ConfigError, PolybusError, PublishError
from polybus.spi import Envelope
from polybus_sqs import SQSAdapter, SQSConsumer, _names, _publish, _wire, capabilities_for
from polybus_sqs._client import Clients
from polybus_sqs._errors import translate
from polybus_sqs._settings import MAX_VISIBILITY_TIMEOUT, parse

URL = "sqs://?region=us-east-1&endpoint_url=http://127.0.0.1:1"


# -- settings -------------------------------------------------------------------------


def test_settings_from_url_and_options() -> None:
    s = parse(URL + "&fifo=true&visibility_timeout=5", {"wait_time_seconds": 2})
    assert (s.region, s.endpoint_url, s.fifo, s.visibility_timeout) == (
        "us-east-1",
        "http://127.0.0.1:1",
        True,
        5,
    )
    assert s.wait_time_seconds == 2
    assert s.sns is True
    assert s.publish_timeout == 30.0
    assert SQSAdapter.from_url(URL + "&publish_timeout=4.5", {}).publish_timeout == 4.5


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("no_such=1", "no_such"),
        ("visibility_timeout=0", "visibility_timeout"),
        ("visibility_timeout=50000", "visibility_timeout"),
        ("wait_time_seconds=21", "wait_time_seconds"),
        ("wait_time_seconds=-1", "wait_time_seconds"),
        ("publish_timeout=0", "publish_timeout"),
        ("connect_timeout=0", "connect_timeout"),
        ("connect_timeout=soon", "connect_timeout"),
        ("fifo=maybe", "fifo"),
        ("prefix=bad.prefix", "prefix"),
        ("endpoint_url=localhost", "endpoint_url"),
    ],
)
def test_bad_setting_names_the_field(query: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(f"sqs://?{query}", {})
    assert caught.value.field == field


def test_url_with_a_host_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse("sqs://127.0.0.1:4566", {})
    assert caught.value.field == "url"
    assert "endpoint_url" in str(caught.value)


def test_secrets_in_options_never_in_repr() -> None:
    secret = "wJalrXUtnFEMI-very-secret"
    adapter = SQSAdapter.from_url(
        URL, {"options": {"aws_secret_access_key": secret, "aws_access_key_id": "AKIAEXAMPLE"}}
    )
    shown = repr(adapter.settings) + repr(adapter)
    assert secret not in shown
    assert "AKIAEXAMPLE" not in shown
    assert "endpoint_url=http://127.0.0.1:1" in repr(adapter)


def test_capabilities_follow_the_mode() -> None:
    standard = capabilities_for(parse(URL, {}))
    fifo = capabilities_for(parse(URL + "&fifo=true", {}))
    direct = capabilities_for(parse(URL + "&sns=false", {}))
    assert dataclasses.asdict(standard) == {
        "competing_consumers": True,
        "key_order": False,
        "key_order_competing": False,
        "fan_out": True,
        "persistent": True,
        "replay": False,
        "native_delivery_count": True,
        "native_dead_letter": False,
        "delayed_redelivery": True,
        "max_delay": 43200.0,
        "broker_dedup": False,
        "max_message_size": 195_840,
        "max_headers": None,
        "max_deliveries": None,
        "lag_messages": True,
        "lag_seconds": False,
        "stable_foreign_ids": True,
    }
    assert (fifo.key_order, fifo.key_order_competing, fifo.broker_dedup) == (True, True, True)
    assert dataclasses.replace(fifo, key_order=False, key_order_competing=False) == (
        dataclasses.replace(standard, broker_dedup=True)
    )
    assert not direct.fan_out
    # a binary body is base64 on the wire: the declared limit must fit it
    assert standard.max_message_size * 4 // 3 < _wire.MAX_MESSAGE_BYTES


def test_standard_mode_names_why_it_refuses_key_order() -> None:
    standard = SQSAdapter.from_url(URL, {})
    assert standard.key_order_refusal is not None
    assert "fifo=true" in standard.key_order_refusal
    assert SQSAdapter.from_url(URL + "&fifo=true", {}).key_order_refusal is None


def test_a_receive_reads_longer_than_any_other_call() -> None:
    settings = parse(
        URL + "&connect_timeout=2&wait_time_seconds=5", {"options": {"read_timeout": 4}}
    )
    clients = Clients(settings)
    clients._make_clients()
    try:
        poll, short = clients._poll.meta.config, clients._sqs.meta.config
        assert poll.read_timeout == 5 + 2  # the long poll plus the margin of any call
        assert short.read_timeout == 4  # the native option wins where it is safe
        assert poll.retries["total_max_attempts"] == 2
        assert short.retries["total_max_attempts"] == 3
        assert short.connect_timeout == poll.connect_timeout == 2
    finally:
        clients.close()
    default = Clients(parse(URL, {}))
    default._make_clients()
    try:
        assert default._sqs.meta.config.read_timeout == 10.0  # connect_timeout
        assert default._poll.meta.config.read_timeout == 1 + 10.0
    finally:
        default.close()


def test_visibility_stops_at_twelve_hours_from_the_receive() -> None:
    now = time.monotonic()
    assert SQSConsumer._room(now) in (MAX_VISIBILITY_TIMEOUT - 2, MAX_VISIBILITY_TIMEOUT - 1)
    assert 0 < SQSConsumer._room(now - 3600) <= MAX_VISIBILITY_TIMEOUT - 3600
    assert SQSConsumer._room(now - MAX_VISIBILITY_TIMEOUT) == 0


# -- names ----------------------------------------------------------------------------


def test_valid_names_stay_readable() -> None:
    assert _names.topic_name("", "orders", fifo=False) == "orders"
    assert _names.topic_name("p-", "orders", fifo=True) == "p-orders.fifo"
    assert _names.topic_queue_name("", "orders", fifo=False) == "orders"
    # group queues keep the names of earlier versions of the adapter (dead-letter
    # queues included), so an upgrade finds the messages waiting in them
    assert _names.group_queue_name("", "orders", "billing", fifo=False) == (
        "orders--billing-8a2a928e35"
    )
    assert _names.group_queue_name("", "orders.billing.dlq", "polybus-dlq", fifo=True) == (
        "orders-billing-dlq--polybus-dlq-c2322502aa.fifo"
    )


def test_sanitised_names_are_valid_and_distinct() -> None:
    valid = re.compile(r"[A-Za-z0-9_-]{1,80}(\.fifo)?")
    a = _names.topic_name("", "orders.g.dlq", fifo=False)
    b = _names.topic_name("", "orders-g-dlq", fifo=False)
    assert a != b
    assert "." not in a
    q1 = _names.group_queue_name("", "a--b", "c", fifo=False)
    q2 = _names.group_queue_name("", "a", "b--c", fifo=False)
    assert q1 != q2
    long = _names.group_queue_name("pre", "t" * 300, "g" * 300, fifo=True)
    other = _names.group_queue_name("pre", "t" * 300, "g" * 299, fifo=True)
    assert len(long) <= _names.SQS_MAX
    assert long.endswith(".fifo")
    assert long != other
    odd = _names.group_queue_name("", "orders.v2", "billing/eu", fifo=False)
    assert all(valid.fullmatch(n) for n in (long, other, odd, q1, q2))
    assert len(_names.topic_queue_name("", "x" * 300, fifo=False)) <= _names.SQS_MAX
    assert len(_names.topic_name("", "é" * 300, fifo=True)) <= _names.SNS_MAX


# -- wire format ----------------------------------------------------------------------


def _round_trip(env: Envelope, *, fifo: bool = False) -> _wire.Decoded:
    wire = _wire.encode(env, fifo=fifo)
    assert len(wire.attributes) <= _wire.MAX_ATTRIBUTES
    return _wire.decode({"Body": wire.body, "MessageAttributes": wire.attributes})


@pytest.mark.parametrize("body", [b"plain text", b"", bytes(range(256)), "é€😀".encode()])
def test_bodies_round_trip_byte_exact(body: bytes) -> None:
    env = Envelope(id="id-1", body=body, key="k", content_type="application/octet-stream")
    got = _round_trip(env)
    assert got.body == body
    assert (got.id, got.key, got.content_type) == ("id-1", "k", "application/octet-stream")


def test_headers_beyond_the_attribute_limit_are_packed() -> None:
    headers = {f"h{i:02}": str(i) for i in range(15)}
    headers |= {"AWS.reserved": "x", "empty": "", "bad name": "y", "ctl": "a\x01b"}
    env = Envelope(id="i", body=b"b", headers=headers)
    wire = _wire.encode(env, fifo=False)
    assert len(wire.attributes) == _wire.MAX_ATTRIBUTES
    assert wire.attributes["h00"] == {"DataType": "String", "StringValue": "0"}
    assert _round_trip(env).headers == headers


def test_published_at_round_trips_in_milliseconds() -> None:
    at = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert _round_trip(Envelope(id="i", body=b"x", published_at=at)).published_at == at


def test_fifo_ids_key_and_dedup() -> None:
    env = Envelope(id="abc", body=b"x", key="order-7")
    wire = _wire.encode(env, fifo=True)
    assert (wire.group_id, wire.dedup_id) == ("order-7", "abc")
    odd = _wire.encode(Envelope(id="i d", body=b"x", key="ключ"), fifo=True)
    assert odd.group_id is not None
    assert odd.group_id.isascii()
    assert len(odd.group_id) <= 128
    assert odd.group_id == _wire.encode(Envelope(id="j", body=b"y", key="ключ"), fifo=True).group_id
    keyless = _wire.encode(Envelope(id="solo", body=b"x"), fifo=True)
    assert keyless.group_id == "solo"
    assert _wire.encode(env, fifo=False).group_id is None


def test_foreign_messages_are_read() -> None:
    got = _wire.decode(
        {
            "MessageId": "m-1",
            "Body": "hello",
            "Attributes": {"SentTimestamp": "1700000000000", "MessageGroupId": "g"},
            "MessageAttributes": {"tenant": {"DataType": "String", "StringValue": "acme"}},
        }
    )
    assert (got.id, got.body, got.key, got.headers) == ("m-1", b"hello", "g", {"tenant": "acme"})
    assert got.published_at is not None


def test_batches_respect_count_and_bytes() -> None:
    small = [_wire.encode(Envelope(id=str(i), body=b"x"), fifo=False) for i in range(25)]
    assert [len(b) for b in _wire.batches(small)] == [10, 10, 5]
    big = [_wire.encode(Envelope(id=str(i), body=b"x" * 100_000), fifo=False) for i in range(5)]
    runs = list(_wire.batches(big))
    assert [len(b) for b in runs] == [2, 2, 1]
    assert all(sum(w.size for w in run) <= _wire.MAX_BATCH_BYTES for run in runs)
    assert [w.id for run in runs for w in run] == [str(i) for i in range(5)]


# -- errors ---------------------------------------------------------------------------


def _client_error(code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "SendMessage")


def _status_error(status: int, code: str) -> ClientError:
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "ReceiveMessage")


def test_transient_failures_are_broker_unavailable() -> None:
    transient = [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:1"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1"),
        ResponseParserError("truncated"),
        _status_error(502, "BadGateway"),
        _status_error(429, "TooMany"),
        _client_error("ThrottlingException", "slow down"),
        _client_error("AWS.SimpleQueueService.NonExistentQueue", "gone"),
        _client_error("QueueDoesNotExist", "gone"),
    ]
    for exc in transient:
        assert isinstance(translate(exc, "receive"), BrokerUnavailable), exc
    assert type(translate(_status_error(400, "InvalidParameterValue"), "x")) is PolybusError
    gone = translate(_client_error("QueueDoesNotExist", "gone"), "publish", publish_ids=("a",))
    assert isinstance(gone, PublishError)
    assert not gone.retryable  # publishing again cannot help: nobody declares it
    reset = translate(ConnectionClosedError(endpoint_url="u"), "publish", publish_ids=("a",))
    assert isinstance(reset, PublishError)
    assert reset.retryable
    assert reset.failed_ids == ("a",)


def test_errors_are_translated_once_with_the_cause() -> None:
    unreachable = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert isinstance(translate(unreachable, "connect"), BrokerUnavailable)
    assert isinstance(translate(NoCredentialsError(), "connect"), ConfigError)
    throttled = translate(_client_error("Throttling", "slow down"), "publish", publish_ids=())
    assert isinstance(throttled, PublishError)
    assert throttled.retryable
    denied = translate(_client_error("AccessDenied", "no"), "publish", publish_ids=())
    assert isinstance(denied, ConfigError)
    assert denied.field == "credentials"
    conflict = translate(_client_error("QueueAlreadyExists", "exists"), "create queue")
    assert isinstance(conflict, ConfigError)
    other = translate(_client_error("InvalidParameterValue", "bad"), "receive")
    assert type(other) is PolybusError
    assert "InvalidParameterValue" in str(other)


def test_error_text_is_scrubbed_of_secrets() -> None:
    secret = "SECRETSECRET123"
    err = translate(
        _client_error("SignatureDoesNotMatch", f"sig for {secret}"), "x", secrets=[secret]
    )
    assert secret not in str(err)
    assert "***" in str(err)


# -- partial batch failures (the batching logic, with a scripted send function) -------


def _wires(count: int) -> list[_wire.Wire]:
    return [_wire.encode(Envelope(id=f"m{i}", body=b"x"), fifo=False) for i in range(count)]


async def test_refused_entries_are_retried_until_confirmed() -> None:
    calls: list[list[str]] = []

    async def send(entries: list[dict[str, object]]) -> dict[str, object]:
        calls.append([str(e["Id"]) for e in entries])
        if len(calls) == 1:  # the broker throttles entry 3 once
            return {"Failed": [{"Id": "3", "Code": "Throttling", "SenderFault": False}]}
        return {"Failed": []}

    confirmed: set[str] = set()
    await _publish.publish(
        "t", _wires(5), send, _publish.sqs_entry, ordered=True, confirmed=confirmed
    )
    assert calls == [["0", "1", "2", "3", "4"], ["3"]]
    assert confirmed == {f"m{i}" for i in range(5)}


async def test_permanent_refusal_names_every_unconfirmed_id() -> None:
    async def send(entries: list[dict[str, object]]) -> dict[str, object]:
        ids = [str(e["Id"]) for e in entries]
        refused = [{"Id": "1", "Code": "InvalidParameterValue", "SenderFault": True}]
        return {"Failed": refused if "1" in ids and len(ids) == 10 else []}

    confirmed: set[str] = set()
    with pytest.raises(PublishError) as caught:
        await _publish.publish(
            "t", _wires(25), send, _publish.sqs_entry, ordered=True, confirmed=confirmed
        )
    # m1 was refused; in order-keeping mode the later batches were not sent at all
    assert caught.value.failed_ids == ("m1", *(f"m{i}" for i in range(10, 25)))
    assert not caught.value.retryable
    assert confirmed == {f"m{i}" for i in range(10)} - {"m1"}


async def test_a_failed_call_fails_only_its_batch_when_unordered() -> None:
    async def send(entries: list[dict[str, object]]) -> dict[str, object]:
        if len(entries) == 5:
            raise PublishError("connection reset", retryable=True)
        return {"Failed": []}

    confirmed: set[str] = set()
    with pytest.raises(PublishError) as caught:
        await _publish.publish(
            "t", _wires(25), send, _publish.sqs_entry, ordered=False, confirmed=confirmed
        )
    assert caught.value.failed_ids == tuple(f"m{i}" for i in range(20, 25))
    assert caught.value.retryable
    assert confirmed == {f"m{i}" for i in range(20)}


def test_retry_waits_come_from_a_backoff_policy() -> None:
    for attempt in range(1, _publish.RETRIES + 1):
        low, high = _publish.RETRY_BACKOFF.bounds(attempt)
        delay = _publish.RETRY_BACKOFF.delay(attempt, random.Random(attempt))
        assert 0 < low <= delay <= high <= 1.0

"""SQS adapter logic that needs no broker: settings, names, the wire format, batching,
capabilities per mode and error translation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from polybus.capabilities import Ordering
from polybus.errors import BrokerUnavailable, ConfigError, PolybusError, PublishError
from polybus.spi import Envelope
from polybus_sqs import SQSAdapter, _names, _publish, _wire, capabilities_for
from polybus_sqs._errors import translate
from polybus_sqs._settings import parse

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


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("no_such=1", "no_such"),
        ("visibility_timeout=0", "visibility_timeout"),
        ("visibility_timeout=50000", "visibility_timeout"),
        ("wait_time_seconds=21", "wait_time_seconds"),
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
    shown = repr(adapter.settings) + repr(adapter) + adapter.redacted_url()
    assert secret not in shown
    assert "AKIAEXAMPLE" not in shown
    assert "endpoint_url=http://127.0.0.1:1" in adapter.redacted_url()


def test_capabilities_follow_the_mode() -> None:
    standard = capabilities_for(parse(URL, {}))
    fifo = capabilities_for(parse(URL + "&fifo=true", {}))
    direct = capabilities_for(parse(URL + "&sns=false", {}))
    assert standard.ordering is Ordering.NONE
    assert not standard.broker_dedup
    assert fifo.ordering is Ordering.PER_KEY
    assert fifo.broker_dedup
    assert standard.fan_out
    assert not direct.fan_out
    assert standard.max_delay == 12 * 3600
    # a binary body is base64 on the wire: the declared limit must fit it
    assert standard.max_message_size * 4 // 3 < _wire.MAX_MESSAGE_BYTES


# -- names ----------------------------------------------------------------------------


def test_valid_names_stay_readable() -> None:
    assert _names.topic_name("", "orders", fifo=False) == "orders"
    assert _names.topic_name("p-", "orders", fifo=True) == "p-orders.fifo"


def test_sanitised_names_are_valid_and_distinct() -> None:
    a = _names.topic_name("", "orders.g.dlq", fifo=False)
    b = _names.topic_name("", "orders-g-dlq", fifo=False)
    assert a != b
    assert "." not in a
    q1 = _names.group_queue_name("", "a__b", "c", fifo=False)
    q2 = _names.group_queue_name("", "a", "b__c", fifo=False)
    assert q1 != q2
    long = _names.group_queue_name("pre", "t" * 300, "g" * 300, fifo=True)
    assert len(long) <= _names.SQS_MAX
    assert long.endswith(".fifo")
    assert len(_names.topic_queue_name("", "x" * 300, fifo=False)) <= _names.SQS_MAX


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

    await _publish.publish("t", _wires(5), send, _publish.sqs_entry, ordered=True)
    assert calls == [["0", "1", "2", "3", "4"], ["3"]]


async def test_permanent_refusal_names_every_unconfirmed_id() -> None:
    async def send(entries: list[dict[str, object]]) -> dict[str, object]:
        ids = [str(e["Id"]) for e in entries]
        refused = [{"Id": "1", "Code": "InvalidParameterValue", "SenderFault": True}]
        return {"Failed": refused if "1" in ids and len(ids) == 10 else []}

    with pytest.raises(PublishError) as caught:
        await _publish.publish("t", _wires(25), send, _publish.sqs_entry, ordered=True)
    # m1 was refused; in order-keeping mode the later batches were not sent at all
    assert caught.value.failed_ids == ("m1", *(f"m{i}" for i in range(10, 25)))
    assert not caught.value.retryable


async def test_a_failed_call_fails_only_its_batch_when_unordered() -> None:
    async def send(entries: list[dict[str, object]]) -> dict[str, object]:
        if len(entries) == 5:
            raise PublishError("connection reset", retryable=True)
        return {"Failed": []}

    with pytest.raises(PublishError) as caught:
        await _publish.publish("t", _wires(25), send, _publish.sqs_entry, ordered=False)
    assert caught.value.failed_ids == tuple(f"m{i}" for i in range(20, 25))
    assert caught.value.retryable

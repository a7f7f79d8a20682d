"""NATS adapter logic that needs no server: settings, names, header encoding."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

import polybus
from polybus.errors import ConfigError, InvalidMessage
from polybus.spi import Envelope
from polybus_nats import NatsAdapter, _headers, _naming
from polybus_nats._settings import parse


def test_url_parsing_fills_servers_and_credentials() -> None:
    s = parse("nats://alice:s3cret@h1:4300,h2?storage=memory&ack_wait=2.5", {})
    assert s.servers == ("nats://h1:4300", "nats://h2:4222")
    assert (s.user, s.password, s.storage, s.ack_wait) == ("alice", "s3cret", "memory", 2.5)
    token = parse("nats://tok3n@h1", {})
    assert (token.token, token.user) == ("tok3n", None)


def test_secrets_never_in_repr_or_redacted_url() -> None:
    adapter = NatsAdapter.from_url(
        "nats://alice:s3cret@h1:4300", {"options": {"user_credentials_password": "x9y8"}}
    )
    shown = repr(adapter) + adapter.redacted_url() + repr(adapter.settings)
    assert "s3cret" not in shown
    assert "x9y8" not in shown
    assert adapter.redacted_url() == "nats://alice:***@h1:4300"
    assert "tok3n" not in NatsAdapter.from_url("nats://tok3n@h1", {}).redacted_url()


@pytest.mark.parametrize(
    ("url", "options", "field"),
    [
        ("nats://h?colour=red", {}, "colour"),
        ("nats://h?storage=tape", {}, "storage"),
        ("nats://h?ack_wait=soon", {}, "ack_wait"),
        ("nats://h?ack_wait=0", {}, "ack_wait"),
        ("nats://h", {"replicas": 0}, "replicas"),
        ("nats://h", {"subject_prefix": "a..b"}, "subject_prefix"),
        ("nats://h", {"stream_prefix": "a.b"}, "stream_prefix"),
        ("nats://h", {"options": {"servers": ["nats://x"]}}, "options.servers"),
        ("nats://h:port", {}, "url"),
        ("nats://h/path", {}, "url"),
    ],
)
def test_bad_settings_name_the_field(url: str, options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        polybus.connect(url, **options)
    assert caught.value.field == field


def test_connect_timeout_and_native_options_accepted() -> None:
    adapter = NatsAdapter.from_url(
        "nats://h?connect_timeout=1.5", {"options": {"ping_interval": 5}}
    )
    assert adapter.settings.connect_timeout == 1.5
    assert adapter.settings.options == {"ping_interval": 5}


def test_names_keep_valid_tokens_and_hash_the_rest() -> None:
    assert _naming.stream_name("polybus-", "orders") == "polybus-orders"
    assert _naming.subject("polybus", "orders.created") == "polybus.orders.created"
    assert _naming.stream_name("p-", "orders.created") == "p-orders_created"
    odd = _naming.stream_name("p-", "my topic/ü")
    assert odd.startswith("p-my_topic-")
    assert len(odd.rsplit("-", 1)[1]) == 10
    assert _naming.subject("polybus", "a..b") != "polybus.a..b"
    assert _naming.stream_name("", "a b") != _naming.stream_name("", "a/b")
    assert _naming.consumer_name("g.1") != _naming.consumer_name("g_1")
    assert _naming.consumer_name("fulfil-ment_2") == "fulfil-ment_2"


def _envelope(headers: dict[str, str], key: str | None = "k") -> Envelope:
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    return Envelope(
        id="id-1", body=b"x", key=key, headers=headers, content_type="text/x", published_at=stamp
    )


def test_headers_round_trip_byte_exact_even_with_newlines_and_blanks() -> None:
    user = {"trace": "line1\nline2\r\n", "pad": "  both ends\t", "pct": "100%", "e": ""}
    env = _envelope(user, key=" spaced key ")
    wire = _headers.encode(env, "S")
    for value in wire.values():
        assert "\n" not in value
        assert "\r" not in value
        assert value == value.strip()
    assert wire[_headers.MSG_ID] == "id-1"
    back = _headers.decode(wire)
    assert back.headers == user
    assert (back.id, back.key, back.content_type) == ("id-1", " spaced key ", "text/x")
    assert back.published_at == env.published_at


def test_foreign_headers_pass_through_unescaped() -> None:
    back = _headers.decode({"X-Percent": "50%2A", "Nats-Msg-Id": "m"})
    assert back.headers == {"X-Percent": "50%2A"}
    assert back.id is None


def test_header_name_nats_cannot_carry_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="bad name"):
        _headers.encode(_envelope({"bad name": "v"}), "S")

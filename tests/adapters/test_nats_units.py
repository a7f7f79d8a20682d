"""NATS adapter logic that needs no server: settings, names, header encoding,
capabilities and the import boundary."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import polybus
import polybus_nats
from polybus.errors import ConfigError, InvalidMessage
from polybus.spi import Envelope, Ordering
from polybus_nats import NatsAdapter, _headers
from polybus_nats._settings import parse
from polybus_nats._topology import consumer_name, group_description, stream_name, subject


def test_url_parsing_fills_servers_and_credentials() -> None:
    s = parse("nats://alice:s3cret@h1:4300,h2?storage=memory&ack_wait=2.5", {})
    assert s.servers == ("nats://h1:4300", "nats://h2:4222")
    assert (s.user, s.password, s.storage, s.ack_wait) == ("alice", "s3cret", "memory", 2.5)
    token = parse("nats://tok3n@h1", {})
    assert (token.token, token.user) == ("tok3n", None)


def test_secrets_never_in_repr() -> None:
    adapter = NatsAdapter.from_url(
        "nats://alice:s3cret@h1:4300", {"options": {"user_credentials_password": "x9y8"}}
    )
    shown = repr(adapter) + repr(adapter.settings)
    assert "s3cret" not in shown
    assert "x9y8" not in shown
    assert repr(adapter) == "<NatsAdapter nats://alice:***@h1:4300>"
    token = NatsAdapter.from_url("nats://tok3n@h1", {})
    assert "tok3n" not in repr(token) + repr(token.settings)
    assert token.settings.token == "tok3n"


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
    assert stream_name("polybus-", "orders") == "polybus-orders"
    assert subject("polybus", "orders.created") == "polybus.orders.created"
    assert stream_name("p-", "orders.created") == "p-orders_created"
    odd = stream_name("p-", "my topic/ü")
    assert odd.startswith("p-my_topic")
    assert len(odd.rsplit("-", 1)[1]) == 10
    for name in (odd, subject("polybus", "my topic/ü"), consumer_name("team a.b")):
        assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in name)
    assert subject("polybus", "a..b") != "polybus.a..b"
    assert subject("polybus", "a.") != "polybus.a."
    assert stream_name("", "a b") != stream_name("", "a/b")
    assert consumer_name("g.1") != consumer_name("g_1")
    assert consumer_name("fulfil-ment_2") == "fulfil-ment_2"
    long = "x" * 100
    assert len(consumer_name(long)) <= 64
    assert consumer_name(long) != consumer_name(long + "y")


def test_group_description_records_the_ordering() -> None:
    # the unordered form is the one every earlier version wrote: old groups match it
    assert group_description("g", Ordering.NONE) == "polybus group 'g'"
    assert group_description("g", Ordering.KEY) == "polybus group 'g' ordered by key"


def test_capabilities() -> None:
    caps = polybus.connect("nats://h").capabilities
    assert caps.competing_consumers
    assert caps.key_order
    assert caps.key_order_competing
    assert caps.fan_out
    assert caps.persistent
    assert caps.native_delivery_count
    assert caps.broker_dedup
    assert caps.delayed_redelivery
    assert not caps.native_dead_letter
    assert not caps.replay
    assert caps.max_deliveries is None
    assert caps.stable_foreign_ids
    assert caps.max_message_size == 1024 * 1024 - 4096
    assert not polybus.connect("nats://h?storage=memory").capabilities.persistent


def test_publish_timeout_is_the_request_timeout() -> None:
    assert NatsAdapter.from_url("nats://h?request_timeout=3.5", {}).publish_timeout == 3.5


def _polybus_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "polybus"}


def test_adapter_imports_only_the_spi_errors_and_top_level_polybus() -> None:
    package = Path(polybus_nats.__file__).parent
    allowed = {"polybus", "polybus.spi", "polybus.errors"}
    for module in package.glob("_*.py"):  # bench.py is the benchmark's raw side
        assert _polybus_imports(module) <= allowed, module.name
    # the consumer is given what it needs: it never imports the adapter
    tree = ast.parse((package / "_consumer.py").read_text())
    relative = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
    assert "_adapter" not in relative


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
    # a foreign message keeps every native header, Nats-Msg-Id included
    native = {"X-Percent": "50%2A", "Nats-Msg-Id": "m", "polybus-nats-escaped": "X-Percent"}
    back = _headers.decode(native)
    assert back.headers == native
    assert back.id is None
    # polybus's own messages drop what polybus added for the broker
    mine = _headers.encode(_envelope({"X-Percent": "50%2A"}), "S")
    assert _headers.decode(mine).headers == {"X-Percent": "50%2A"}


def test_header_name_nats_cannot_carry_is_refused() -> None:
    with pytest.raises(InvalidMessage, match="bad name"):
        _headers.encode(_envelope({"bad name": "v"}), "S")


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.polybus-orders.g.3.41.17.1796152887576401284.5",
        # with a domain and account hash (nats-server 2.9+ behind a leaf node)
        "$JS.ACK.hub.ACCHASH.polybus-orders.g.3.41.17.1796152887576401284.5.rand",
    ],
    ids=["plain", "domain"],
)
def test_delivery_facts_from_the_ack_subject_match_nats_py(reply: str) -> None:
    from nats.aio.msg import Msg

    from polybus_nats._consumer import _delivery

    msg = Msg(None, subject="s", reply=reply, data=b"", headers=None)  # type: ignore[arg-type]
    meta = msg.metadata
    assert _delivery(msg) == (meta.num_delivered, meta.stream, meta.sequence.stream)
    assert _delivery(msg) == (3, "polybus-orders", 41)

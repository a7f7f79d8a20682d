"""Bad input fails early with a polybus error naming what was wrong, never echoing a
password: fixed cases that used to slip through, then properties over generated URLs,
options, header maps and bodies (hypothesis)."""

from __future__ import annotations

import asyncio
import contextlib
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polybus
from polybus import config
from polybus.errors import ConfigError, PolybusError

SCHEMES = ["memory", "kafka", "amqp", "amqps", "sqs", "pubsub", "nats"]
SECRET = "Pw9x7Q"
"""A password no other part of a generated URL can contain."""


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("kafka://[::1]:9092", ("[::1]", 9092)),
        ("nats://[2001:db8::1]", ("[2001:db8::1]", 4222)),
        ("amqp://u:p@[::1]:5673/", ("[::1]", 5673)),
    ],
)
def test_ipv6_literals_are_hosts(url: str, host: tuple[str, int]) -> None:
    assert config.parse_url(url).host_port(4222)[0] == host


@pytest.mark.parametrize(
    "url",
    [
        f"amqp://u:{SECRET}@[::1/",
        f"amqp://u:{SECRET}@h:70000/",
        f"nats://u:{SECRET}@h:65536",
        f"kafka://u:{SECRET}@h:port",
        "kafka://h:0",
    ],
)
def test_malformed_urls_are_config_errors_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        polybus.connect(url)
    assert raised.value.field == "url"
    assert SECRET not in str(raised.value)


def test_a_bad_number_names_the_expected_type() -> None:
    with pytest.raises(ConfigError) as raised:
        polybus.connect("memory://", max_message_size="abc")
    assert raised.value.field == "max_message_size"
    assert "'abc' is not an integer" in str(raised.value)
    assert "|" not in str(raised.value)


# -- properties ----------------------------------------------------------------------

_host_char = st.sampled_from(string.ascii_letters + string.digits + ".-[]:%")
hosts = st.text(_host_char, min_size=0, max_size=12)
ports = st.one_of(
    st.none(), st.integers(-5, 70_000).map(str), st.text(string.printable, max_size=4)
)
option_names = st.sampled_from(
    [
        "connect_timeout",
        "partitions",
        "fifo",
        "max_message_size",
        "emulator",
        "region",
        "visibility_timeout",
        "queue_type",
        "no_such_option",
        "publish_timeout",
        "key_locks",
    ]
)
option_values = st.one_of(
    st.text(string.printable, max_size=8), st.integers(-10, 10**6), st.booleans(), st.none()
)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(SCHEMES))
    user = draw(st.sampled_from(["", "u@", f"u:{SECRET}@"]))
    host = draw(hosts)
    port = draw(ports)
    netloc = host + ("" if port is None else f":{port}")
    path = draw(st.sampled_from(["", "/", "/vhost", "/a/b"]))
    query = draw(
        st.dictionaries(
            option_names, st.text(string.ascii_letters + "0123456789=&", max_size=6), max_size=3
        )
    )
    text = "&".join(f"{k}={v}" for k, v in query.items())
    return f"{scheme}://{user}{netloc}{path}" + (f"?{text}" if text else "")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(url=urls(), options=st.dictionaries(option_names, option_values, max_size=3))
def test_connect_raises_only_polybus_errors_and_never_shows_the_password(
    url: str, options: dict[str, Any]
) -> None:
    shown = ""
    try:
        bus = polybus.connect(url, **options)
    except PolybusError as exc:  # the only kind of error allowed
        shown = f"{exc} {exc!r}"
    else:
        shown = f"{bus!r} {bus.url}"
    assert SECRET not in shown


header_maps = st.one_of(
    st.none(),
    st.dictionaries(
        st.one_of(st.text(max_size=10), st.integers(), st.sampled_from(["polybus-id"])),
        st.one_of(st.text(max_size=10), st.integers(), st.none()),
        max_size=3,
    ),
)
bodies = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.sampled_from([float("nan"), object(), {1, 2}, b"x" * (9 * 1024 * 1024)]),
)
keys = st.one_of(st.none(), st.text(max_size=8), st.integers())


@settings(max_examples=150, deadline=None)
@given(body=bodies, headers=header_maps, key=keys)
def test_publish_raises_only_polybus_errors(body: object, headers: Any, key: Any) -> None:
    async def run() -> None:
        async with polybus.connect("memory://") as bus:
            with contextlib.suppress(PolybusError):  # anything else fails the test
                await bus.publish("t", body, headers=headers, key=key)

    asyncio.run(run())


subscribe_values = st.one_of(
    st.integers(-3, 3), st.text(max_size=6), st.none(), st.floats(allow_nan=True), st.booleans()
)


@settings(max_examples=150, deadline=None)
@given(
    max_in_flight=subscribe_values,
    delivery=subscribe_values,
    max_deliveries=subscribe_values,
    ordering=subscribe_values,
    group=st.one_of(st.text(max_size=6), st.none(), st.integers()),
)
def test_subscribe_options_raise_config_errors_naming_the_field(
    max_in_flight: Any, delivery: Any, max_deliveries: Any, ordering: Any, group: Any
) -> None:
    bus = polybus.connect("memory://")
    field = None
    try:
        bus.subscribe(
            "t",
            group=group,
            max_in_flight=max_in_flight,
            delivery=delivery,
            max_deliveries=max_deliveries,
            ordering=ordering,
        )
    except ConfigError as exc:  # the only kind of error allowed
        field = exc.field
    assert field in {None, "max_in_flight", "delivery", "max_deliveries", "ordering", "group"}


def test_a_bad_partition_count_names_the_field_plainly() -> None:
    with pytest.raises(ConfigError) as raised:
        polybus.connect("kafka://127.0.0.1:9092?partitions=abc")
    assert raised.value.field == "partitions"
    assert "'abc' is not an integer" in str(raised.value)
    assert "int | None" not in str(raised.value)

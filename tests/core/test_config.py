"""Configuration: bad settings name their field, secrets never show, resolution order."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import polybus
from polybus import config
from polybus.errors import ConfigError

from .helpers import WAIT, name

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("url", "options", "field"),
    [
        ("no-scheme-here", {}, "url"),
        ("://nothing", {}, "url"),
        ("nosuch://host", {}, "url"),
        ("memory://one/extra/path", {}, "url"),
        ("memory://a,b", {}, "url"),
        ("memory://?bogus=1", {}, "bogus"),
        ("memory://", {"bogus": 1}, "bogus"),
        ("memory://?max_message_size=big", {}, "max_message_size"),
        ("memory://?max_message_size=-5", {}, "max_message_size"),
        ("memory://", {"connect_timeout": "soon"}, "connect_timeout"),
        ("memory://?connect_timeout=1&connect_timeout=2", {}, "connect_timeout"),
    ],
)
def test_bad_url_or_option_names_the_field(url: str, options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        polybus.connect(url, **options)
    assert info.value.field == field
    assert repr(field) in str(info.value)


def test_unknown_scheme_lists_the_installed_ones() -> None:
    with pytest.raises(ConfigError, match=r"nosuch://.*memory://"):
        polybus.connect("nosuch://host")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"group": ""}, "group"),
        ({"group": "g", "max_in_flight": 0}, "max_in_flight"),
        ({"group": "g", "delivery": "exactly_once"}, "delivery"),
        ({"group": "g", "max_deliveries": 0}, "max_deliveries"),
    ],
)
async def test_bad_subscription_settings_name_the_field(
    bus: polybus.Bus, kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as info:
        bus.subscribe(name(), **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize(
    ("url", "options"),
    [
        (f"memory://user:{SECRET}@broker?bogus=1", {}),
        (f"memory://user:{SECRET}@a,b", {}),
        (f"nosuch://user:{SECRET}@host:1", {}),
        (f"user:{SECRET}@host:1", {}),
        ("memory://", {"password": SECRET}),
        ("memory://", {"sasl.password": SECRET}),
    ],
)
def test_secrets_never_appear_in_errors(url: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        polybus.connect(url, **options)
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


async def test_secrets_never_appear_in_reprs_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="polybus")
    topic = name()
    async with (
        polybus.connect(f"memory://admin:{SECRET}@{name('b')}") as bus,
        bus.subscribe(topic, group="g") as sub,
    ):
        await bus.publish(topic, b"x")
        msg = await sub.get(timeout=WAIT)
        shown = [repr(bus), str(bus), repr(sub), repr(msg), repr(bus.adapter)]
        await msg.ack()
    assert caplog.records  # logging did happen, so the check below means something
    for text in [*shown, *(r.getMessage() for r in caplog.records)]:
        assert SECRET not in text


def test_parsed_url_hides_the_password() -> None:
    parsed = config.parse_url(f"amqp://guest:{SECRET}@h1:5672,h2/vhost?heartbeat=5")
    assert parsed.password == SECRET
    assert SECRET not in repr(parsed)
    assert parsed.hosts == ("h1:5672", "h2")
    assert parsed.host_port(5672) == [("h1", 5672), ("h2", 5672)]
    assert parsed.query == {"heartbeat": "5"}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"amqp://guest:{SECRET}@host/", "amqp://guest:***@host/"),
        ("amqp://guest@host/", "amqp://***@host/"),  # a lone user part may be a token
        ("nats://tok3n@h1:4222", "nats://***@h1:4222"),
        ("amqp://guest:guest@host/", "amqp://***:***@host/"),
        (f"kafka://h?sasl.password={SECRET}&acks=all", "kafka://h?sasl.password=***&acks=all"),
        (f"sqs://h?aws_secret_access_key={SECRET}", "sqs://h?aws_secret_access_key=***"),
        (f"nats://h?token={SECRET}", "nats://h?token=***"),
        (f"user:{SECRET}@host", "user:***@host"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert config.redact(url) == shown


class TestResolutionOrder:
    """``POLYBUS_URL``, then ``polybus.toml``, then ``[tool.polybus]``, then memory://."""

    @pytest.fixture(autouse=True)
    def _clean(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(config.ENV_VAR, raising=False)
        monkeypatch.chdir(tmp_path)

    def _write(self, tmp_path: Path, *, toml: bool, pyproject: bool) -> None:
        if toml:
            (tmp_path / "polybus.toml").write_text(
                'url = "memory://from-toml"\n[options]\nmax_message_size = 4096\n'
            )
        if pyproject:
            (tmp_path / "pyproject.toml").write_text(
                '[project]\nname = "app"\n[tool.polybus]\nurl = "memory://from-pyproject"\n'
            )

    @pytest.mark.parametrize(
        ("env", "toml", "pyproject", "expected"),
        [
            (True, True, True, "from-env"),
            (False, True, True, "from-toml"),
            (False, False, True, "from-pyproject"),
            (False, False, False, ""),
        ],
    )
    def test_order(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        env: bool,
        toml: bool,
        pyproject: bool,
        expected: str,
    ) -> None:
        if env:
            monkeypatch.setenv(config.ENV_VAR, "memory://from-env")
        self._write(tmp_path, toml=toml, pyproject=pyproject)
        bus = polybus.connect()
        assert bus.url == f"memory://{expected}"

    def test_explicit_url_beats_everything(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(config.ENV_VAR, "memory://from-env")
        self._write(tmp_path, toml=True, pyproject=True)
        assert polybus.connect("memory://explicit").url == "memory://explicit"

    def test_file_options_apply_and_keyword_options_win(self, tmp_path: Path) -> None:
        self._write(tmp_path, toml=True, pyproject=False)
        assert polybus.connect().capabilities.max_message_size == 4096
        assert polybus.connect(max_message_size=10).capabilities.max_message_size == 10

    def test_pyproject_without_the_table_is_skipped(self, tmp_path: Path) -> None:
        (tmp_path / "pyproject.toml").write_text('[project]\nname = "app"\n')
        assert config.resolve(None) == ("memory://", {})

    @pytest.mark.parametrize(
        ("content", "field"),
        [
            ("url = 5\n", "polybus.toml: url"),
            ('url = "memory://"\noptions = 3\n', "polybus.toml: options"),
            ("url = = broken\n", "polybus.toml"),
        ],
    )
    def test_bad_file_names_the_field(self, tmp_path: Path, content: str, field: str) -> None:
        (tmp_path / "polybus.toml").write_text(content)
        with pytest.raises(ConfigError) as info:
            polybus.connect()
        assert info.value.field.endswith(field)


async def test_dead_letter_topic_template_names_the_dlq() -> None:
    async with polybus.connect(
        "memory://dlq-template", dead_letter_topic="dlq.{group}.{topic}"
    ) as bus:
        assert bus.dead_letter_topic("orders", "billing") == "dlq.billing.orders"
        async with bus.subscribe("orders", group="billing") as sub:
            await bus.publish("orders", b"poison")
            msg = await sub.get(timeout=5)
            await msg.dead_letter("bad")
        async with bus.dead_letters("orders", group="billing") as dead:
            assert dead.topic == "dlq.billing.orders"
            copy = await dead.get(timeout=5)
            assert copy.id == msg.id
            await copy.ack()


@pytest.mark.parametrize("template", ["{topic}.dlq", "dlq", "{topic}.{group}.{oops}", 7])
def test_bad_dead_letter_template_is_a_config_error(template: object) -> None:
    with pytest.raises(ConfigError) as info:
        polybus.connect("memory://", dead_letter_topic=template)
    assert info.value.field == "dead_letter_topic"

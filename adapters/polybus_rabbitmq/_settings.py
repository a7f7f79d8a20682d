"""Typed settings of the RabbitMQ adapter, parsed from the URL and options without I/O.

``amqp://user:password@host[:port][,host2[:port]]/vhost?name=value`` (``amqps://`` for
TLS). The query and the keyword options carry the fields of :class:`RabbitMQSettings`;
``options={...}`` carries native :class:`pika.ConnectionParameters` keywords (heartbeat,
blocked_connection_timeout, client_properties, ssl_options...) passed through untouched.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pika

from polybus.errors import ConfigError
from polybus.spi import parse_settings, parse_url, redact_options

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""polybus's limit; RabbitMQ 3.10 itself refuses messages above 128 MiB by default."""

REMOVED = {
    "single_active_consumer": "ordering is chosen per group now: subscribe or declare with "
    "ordering='key' for a single active consumer, ordering='none' (the default) to share "
    "the work",
    "delivery_limit": "polybus dead-letters at the subscription's max_deliveries itself "
    "on every backend; pass max_deliveries to subscribe (or use the poison guard)",
}
"""Settings of earlier versions, refused with what replaces them."""


@dataclass(frozen=True, slots=True)
class RabbitMQSettings:
    """What a :class:`~polybus_rabbitmq.RabbitMQAdapter` does, fixed at ``connect``."""

    connect_timeout: float = 10.0
    """Seconds to wait for a connection to one host (at open and while reconnecting)."""
    publish_timeout: float = 30.0
    """Seconds to wait for the publisher confirms of one batch."""
    queue_type: Literal["quorum", "classic"] = "quorum"
    """Group queues are durable quorum queues; ``classic`` for classic durable queues
    (no native delivery count: see the README)."""
    exchange_prefix: str = ""
    """Prepended to a topic's name to make its exchange's name."""
    queue_prefix: str = ""
    """Prepended to ``<topic>.<group>`` to make a group's queue name."""
    on_unroutable: Literal["warn", "error"] = "warn"
    """A publish to a topic without any group reaches nobody (as on every backend):
    ``warn`` logs it once per topic, ``error`` raises a non-retryable PublishError."""
    reconnect_max_delay: float = 5.0
    """Longest wait between reconnection attempts after a lost connection (jittered
    exponential backoff from 0.1 s)."""
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    options: dict[str, Any] = field(default_factory=dict)
    """Native pika ConnectionParameters keywords, passed through untouched."""

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0:
            raise ConfigError("connect_timeout", "must be > 0")
        if self.publish_timeout <= 0:
            raise ConfigError("publish_timeout", "must be > 0")
        if self.reconnect_max_delay <= 0:
            raise ConfigError("reconnect_max_delay", "must be > 0")

    def __repr__(self) -> str:
        shown = redact_options(self.options)
        return f"RabbitMQSettings(queue_type={self.queue_type!r}, options={shown!r})"


def parse(url: str, options: Mapping[str, Any]) -> tuple[RabbitMQSettings, list[Any], str]:
    """The settings, one :class:`pika.ConnectionParameters` per host of ``url``, and
    the hosts and vhost as shown in errors (never the user name or the password)."""
    parsed = parse_url(url)
    if parsed.scheme not in ("amqp", "amqps"):
        raise ConfigError("url", f"expected amqp:// or amqps://, got {parsed.scheme}://")
    values = {**parsed.query, **options}
    for name, why in REMOVED.items():
        if name in values:
            raise ConfigError(name, f"removed: {why}")
    settings = parse_settings(RabbitMQSettings, values, source=" for amqp://")
    tls = parsed.scheme == "amqps"
    vhost = parsed.path[1:] if len(parsed.path) > 1 else "/"
    credentials = pika.PlainCredentials(parsed.username or "guest", parsed.password or "guest")
    native = dict(settings.options)
    if tls and "ssl_options" not in native:
        native["ssl_options"] = pika.SSLOptions(ssl.create_default_context())
    native.setdefault("connection_attempts", 1)
    native.setdefault("socket_timeout", settings.connect_timeout)
    native.setdefault("stack_timeout", settings.connect_timeout)
    hosts = parsed.host_port(5671 if tls else 5672) or [("127.0.0.1", 5672)]
    params = []
    for host, port in hosts:
        try:
            params.append(
                pika.ConnectionParameters(
                    host=host,
                    port=port,
                    virtual_host=vhost,
                    credentials=credentials,
                    **native,
                )
            )
        except (TypeError, ValueError) as exc:
            # name the keys only: pika's message would show the values (maybe secrets)
            raise ConfigError(
                "options",
                f"pika ConnectionParameters refused one of {sorted(settings.options)} "
                f"({type(exc).__name__})",
            ) from None
    where = ",".join(f"{host}:{port}" for host, port in hosts) + f"/{parsed.path[1:]}"
    return settings, params, where

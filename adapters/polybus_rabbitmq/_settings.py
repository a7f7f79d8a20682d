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
from urllib.parse import unquote

import pika

from polybus import config
from polybus.errors import ConfigError

DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
"""polybus's limit; RabbitMQ 3.10 itself refuses messages above 128 MiB by default."""


@dataclass(frozen=True, slots=True)
class RabbitMQSettings:
    """What a :class:`~polybus_rabbitmq.RabbitMQAdapter` does, fixed at ``connect``."""

    connect_timeout: float = 10.0
    """Seconds to wait for a connection (at open and while reconnecting)."""
    publish_timeout: float = 30.0
    """Seconds to wait for the publisher confirms of one batch."""
    queue_type: Literal["quorum", "classic"] = "quorum"
    """Group queues are durable quorum queues; ``classic`` for classic durable queues
    (no native delivery count or delivery limit: see the README)."""
    single_active_consumer: bool = True
    """Group queues let one consumer at a time receive (the others stand by), which
    is what makes per-key order hold with several consumers."""
    exchange_prefix: str = ""
    """Prepended to a topic's name to make its exchange's name."""
    queue_prefix: str = ""
    """Prepended to ``<topic>.<group>`` to make a group's queue name."""
    delivery_limit: int | None = None
    """Native delivery limit of groups declared without ``max_deliveries``."""
    on_unroutable: Literal["warn", "error"] = "warn"
    """A publish to a topic without any group reaches nobody (as on every backend):
    ``warn`` logs it once per topic, ``error`` raises a non-retryable PublishError."""
    reconnect_max_delay: float = 5.0
    """Longest wait between reconnection attempts after a lost connection."""
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    options: dict[str, Any] = field(default_factory=dict)
    """Native pika ConnectionParameters keywords, passed through untouched."""

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0:
            raise ConfigError("connect_timeout", "must be > 0")
        if self.publish_timeout <= 0:
            raise ConfigError("publish_timeout", "must be > 0")
        if self.delivery_limit is not None and self.delivery_limit < 1:
            raise ConfigError("delivery_limit", "must be >= 1")
        if self.delivery_limit is not None and self.queue_type != "quorum":
            raise ConfigError("delivery_limit", "needs queue_type=quorum")

    def __repr__(self) -> str:
        shown = config.redact_options(self.options)
        return (
            f"RabbitMQSettings(queue_type={self.queue_type!r}, "
            f"single_active_consumer={self.single_active_consumer}, options={shown!r})"
        )


def parse(url: str, options: Mapping[str, Any]) -> tuple[RabbitMQSettings, list[Any]]:
    """The settings and one :class:`pika.ConnectionParameters` per host of ``url``."""
    parsed = config.parse_url(url)
    if parsed.scheme not in ("amqp", "amqps"):
        raise ConfigError("url", f"expected amqp:// or amqps://, got {parsed.scheme}://")
    settings = config.parse_settings(
        RabbitMQSettings, {**parsed.query, **options}, source=" for amqp://"
    )
    tls = parsed.scheme == "amqps"
    vhost = unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
    credentials = pika.PlainCredentials(parsed.username or "guest", parsed.password or "guest")
    native = dict(settings.options)
    if tls and "ssl_options" not in native:
        native["ssl_options"] = pika.SSLOptions(ssl.create_default_context())
    native.setdefault("connection_attempts", 1)
    native.setdefault("socket_timeout", settings.connect_timeout)
    native.setdefault("stack_timeout", settings.connect_timeout)
    params = []
    for host, port in parsed.host_port(5671 if tls else 5672) or [("127.0.0.1", 5672)]:
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
    return settings, params

"""Typed settings of the Kafka adapter, parsed from the URL and options without I/O."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from polybus.errors import ConfigError
from polybus.spi import parse_settings, parse_url, redact_options

DEFAULT_PORT = 9092
DEFAULT_PARTITIONS = 3
DEFAULT_MAX_MESSAGE_SIZE = 1_000_000
"""librdkafka's own default ``message.max.bytes``; Kafka brokers accept 1,048,588."""

RECORD_OVERHEAD = 64 * 1024
"""Room above ``max_message_size`` for the record batch framing and polybus headers,
so polybus's own size check (not librdkafka's) is the one users meet."""


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Settings of one ``kafka://`` connection.

    ``partitions`` is the partition count of topics polybus creates; when it is given
    explicitly, an existing topic with another count is a conflict (ConfigError), when
    it is left unset (None) an existing topic is used as it is and new ones get
    ``DEFAULT_PARTITIONS``. ``replication_factor`` None means the broker's default.
    ``options`` are librdkafka settings passed through untouched to every client
    (URL query names containing a dot are librdkafka settings too). Its values never
    appear in ``repr``: they may hold SASL passwords.
    """

    bootstrap_servers: str = f"127.0.0.1:{DEFAULT_PORT}"
    partitions: int | None = None
    replication_factor: int | None = None
    connect_timeout: float = 10.0
    publish_timeout: float = 30.0
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    poll_interval: float = 0.05
    pause_after: float = 5.0
    revoke_timeout: float = 10.0
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.partitions is not None and self.partitions < 1:
            raise ConfigError("partitions", f"must be >= 1, got {self.partitions}")
        if self.replication_factor is not None and self.replication_factor < 1:
            raise ConfigError("replication_factor", f"must be >= 1, got {self.replication_factor}")
        if self.connect_timeout <= 0:
            raise ConfigError("connect_timeout", "must be > 0 seconds")
        if self.publish_timeout <= 0:
            raise ConfigError("publish_timeout", "must be > 0 seconds")
        if not 0 < self.poll_interval <= 5:
            raise ConfigError("poll_interval", "must be between 0 and 5 seconds")
        if not 0 < self.pause_after <= 300:
            raise ConfigError("pause_after", "must be between 0 and 300 seconds")
        if not 0 <= self.revoke_timeout <= 300:
            raise ConfigError("revoke_timeout", "must be between 0 and 300 seconds")
        if self.max_message_size < 1:
            raise ConfigError("max_message_size", "must be >= 1 byte")
        for name in self.options:
            if not isinstance(name, str):
                raise ConfigError("options", f"setting names must be str, got {name!r}")
            if name in _OWNED:
                raise ConfigError(
                    f"options.{name}", f"is managed by polybus ({_OWNED[name]}); remove it"
                )

    @property
    def topic_partitions(self) -> int:
        return self.partitions or DEFAULT_PARTITIONS

    def redacted_options(self) -> dict[str, Any]:
        return redact_options(self.options)

    def common(self, client: Literal["producer", "consumer", "admin"]) -> dict[str, Any]:
        """The brokers plus the user's librdkafka settings that apply to ``client``.

        Settings of the other role are left out (librdkafka would warn about each);
        unknown names all go through, so librdkafka itself rejects a misspelt one.
        """
        skip = {"producer": _CONSUMER_ONLY, "consumer": _PRODUCER_ONLY}.get(
            client, _CONSUMER_ONLY + _PRODUCER_ONLY
        )
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "socket.connection.setup.timeout.ms": max(1000, int(self.connect_timeout * 1000)),
            **{k: v for k, v in self.options.items() if not k.startswith(skip)},
        }


_CONSUMER_ONLY = (
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "fetch.",
    "auto.offset.reset",
    "auto.commit.",
    "partition.assignment.strategy",
    "group.",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "queued.",
    "coordinator.query.interval.ms",
    "consume.callback.max.messages",
)
_PRODUCER_ONLY = (
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "linger.ms",
    "queue.buffering.",
    "batch.",
    "compression.",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "message.send.max.retries",
    "retries",
    "partitioner",
    "transactional.id",
    "transaction.timeout.ms",
    "sticky.partitioning.linger.ms",
    "queue.buffering.backpressure.threshold",
)


_OWNED = {
    "bootstrap.servers": "give the brokers in the URL: kafka://host:port,host:port",
    "group.id": "the group is the subscription's group",
    "enable.auto.commit": "polybus commits settled offsets itself",
    "enable.auto.offset.store": "polybus commits settled offsets itself",
    "on_delivery": "polybus waits for delivery reports itself",
}


def parse(url: str, options: Mapping[str, Any]) -> KafkaSettings:
    """``kafka://host:port[,host:port...][?name=value...]`` plus ``options``.

    Query names and option names that contain a dot (``session.timeout.ms``) are
    librdkafka settings; ``options={...}`` passes a dict of them; every other name is a
    polybus setting of :class:`KafkaSettings`.
    """
    parsed = parse_url(url)
    if parsed.scheme != "kafka":
        raise ConfigError("url", f"expected kafka://, got {parsed.scheme}://")
    if parsed.path.strip("/"):
        raise ConfigError("url", "kafka:// takes no path: kafka://host:port[,host:port]")
    if parsed.username is not None or parsed.password is not None:
        raise ConfigError(
            "url",
            "credentials go in options (sasl.username / sasl.password), not in the URL",
        )
    hosts = parsed.host_port(DEFAULT_PORT) if parsed.hosts else [("127.0.0.1", DEFAULT_PORT)]
    native: dict[str, Any] = {}
    plain: dict[str, Any] = {}
    for source in (parsed.query, options):
        for name, value in source.items():
            if name == "options":
                if not isinstance(value, Mapping):
                    raise ConfigError("options", "must be a mapping of librdkafka settings")
                native.update(value)
            elif "." in name:
                native[name] = value
            else:
                plain[name] = value
    if "bootstrap_servers" in plain:
        raise ConfigError("bootstrap_servers", "give the brokers in the URL")
    plain["bootstrap_servers"] = ",".join(f"{host}:{port}" for host, port in hosts)
    plain["options"] = native
    known = {f.name for f in dataclasses.fields(KafkaSettings)}
    for name in plain:
        if name not in known:
            raise ConfigError(
                name,
                "unknown option for kafka://; expected one of: "
                + ", ".join(sorted(known - {"bootstrap_servers"}))
                + " (or a librdkafka setting containing a dot)",
            )
    return parse_settings(KafkaSettings, plain, source=" for kafka://")

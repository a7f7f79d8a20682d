"""Typed settings of the ``pubsub://`` adapter, parsed from the URL and options."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from polybus.errors import ConfigError
from polybus.spi import parse_settings, parse_url, redact_options

EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"

MIN_ACK_DEADLINE = 10
MAX_ACK_DEADLINE = 600
"""Pub/Sub's bounds for a subscription's ack deadline, in seconds."""

REMOVED = {
    "ordering": "ordering is chosen per group now: subscribe(..., ordering='key') or "
    "declare(topic, group, ordering='key')",
    "max_lease": "removed: polybus renews the lease of a message for as long as it is unsettled",
}
"""Settings of earlier versions, refused with what replaces them."""

_PROJECT = re.compile(r"[a-z][a-z0-9.:-]{0,62}")
_HOST_PORT = re.compile(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}")


@dataclass(frozen=True, slots=True)
class PubSubSettings:
    """Settings of one ``pubsub://PROJECT[?name=value...]`` connection.

    ``emulator`` (``host:port``) selects Google's emulator over plain gRPC with no
    credentials; when it is not given, ``PUBSUB_EMULATOR_HOST`` is honoured, and
    without either polybus talks to Google Cloud with application default
    credentials. ``options`` are keyword arguments handed untouched to every
    google-cloud-pubsub client (``credentials``, ``client_options``...); they are
    never shown in reprs or errors.
    """

    project: str
    emulator: str | None = None
    connect_timeout: float = 10.0
    """Seconds ``open`` keeps trying before BrokerUnavailable; also the bound of an
    exactly-once ack's retries."""
    ack_deadline: int = 10
    """The subscription's ack deadline (seconds, 10..600): the lease of a delivery. A
    crashed consumer's messages come back after it; live consumers renew it."""
    pull_timeout: float = 30.0
    """The longest one unary pull waits for messages before asking again."""
    exactly_once: bool = False
    """Create subscriptions with exactly-once delivery (acks are confirmed)."""
    publish_timeout: float = 60.0
    """Seconds one publish may take (per Publish RPC, and the core's bound)."""
    batch_max_messages: int = 1000
    """Publish RPCs carry up to this many messages (concurrent publishes coalesce)."""
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not _PROJECT.fullmatch(self.project):
            raise ConfigError(
                "project",
                f"{self.project!r} is not a Google Cloud project id "
                "(lowercase letters, digits, '-', '.', ':'; starting with a letter)",
            )
        if self.emulator is not None and not _HOST_PORT.fullmatch(self.emulator):
            raise ConfigError("emulator", f"expected host:port, got {self.emulator!r}")
        if not MIN_ACK_DEADLINE <= self.ack_deadline <= MAX_ACK_DEADLINE:
            raise ConfigError(
                "ack_deadline",
                f"must be between {MIN_ACK_DEADLINE} and {MAX_ACK_DEADLINE} seconds, "
                f"got {self.ack_deadline}",
            )
        for name in ("connect_timeout", "pull_timeout", "publish_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be > 0, got {getattr(self, name)}")
        if not 1 <= self.batch_max_messages <= 1000:
            raise ConfigError("batch_max_messages", "must be between 1 and 1000")

    def __repr__(self) -> str:
        shown = redact_options(self.options)
        return (
            f"PubSubSettings(project={self.project!r}, endpoint={self.endpoint_label()!r}, "
            f"exactly_once={self.exactly_once}, options={sorted(shown)})"
        )

    @property
    def emulator_host(self) -> str | None:
        """The emulator to use: the URL's ``emulator``, else ``PUBSUB_EMULATOR_HOST``."""
        return self.emulator or os.environ.get(EMULATOR_ENV) or None

    def endpoint_label(self) -> str:
        host = self.emulator_host
        return f"emulator {host}" if host else "Google Cloud"


def parse(url: str, options: Mapping[str, Any]) -> PubSubSettings:
    """``pubsub://PROJECT[?emulator=host:port&...]`` plus ``options`` -> settings."""
    parsed = parse_url(url)
    if parsed.scheme != "pubsub":
        raise ConfigError("url", f"expected pubsub://PROJECT, got {parsed.scheme}://")
    if parsed.username is not None or parsed.password is not None:
        raise ConfigError(
            "url", "pubsub:// takes no user or password; credentials come from ADC or options"
        )
    if len(parsed.hosts) != 1 or parsed.path.strip("/"):
        raise ConfigError("project", "expected exactly one project: pubsub://PROJECT")
    values: dict[str, Any] = {"project": parsed.hosts[0]}
    values.update(parsed.query)
    values.update(options)
    for name, replacement in REMOVED.items():
        if name in values:
            raise ConfigError(name, f"pubsub: {replacement}")
    return parse_settings(PubSubSettings, values)

"""Typed settings of the ``nats://`` adapter, parsed from the URL query and options."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from polybus.errors import ConfigError
from polybus.spi import parse_settings, parse_url, redact, redact_options

DEFAULT_PORT = 4222

__all__ = ["DEFAULT_PORT", "NatsSettings", "parse", "shown_url"]


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """Every knob of the NATS JetStream adapter. Durations are float seconds; a limit
    of 0 means unlimited. ``options`` are passed untouched to ``nats.connect``."""

    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    """Server URLs without credentials (credentials travel as ``user``/``password``)."""
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    """``nats://TOKEN@host`` (a user name without a password) is a NATS auth token."""

    connect_timeout: float = 5.0
    """Seconds :meth:`open` waits for the first connection before BrokerUnavailable."""
    request_timeout: float = 10.0
    """Seconds a JetStream API call or a publish acknowledgement may take (also the
    adapter's ``publish_timeout``)."""

    stream_prefix: str = "polybus-"
    """Prepended to the fitted topic to name its stream."""
    subject_prefix: str = "polybus"
    """First subject token(s): topic ``orders`` is subject ``polybus.orders``."""
    storage: Literal["file", "memory"] = "file"
    replicas: int = 1
    max_age: float = 0.0
    """Stream retention by age (seconds); 0 keeps messages until another limit hits."""
    max_bytes: int = 0
    max_msgs: int = 0
    duplicate_window: float = 120.0
    """How long the stream remembers a ``Nats-Msg-Id`` for broker deduplication."""

    ack_wait: float = 30.0
    """Seconds a delivered message stays with its consumer unless its lease is renewed
    (the consumer's ``lease``; polybus renews it with in-progress acks while the message
    is unsettled). So it is the redelivery delay after a consumer dies, not a handler
    time limit."""
    max_ack_pending: int = 10_000
    """Unacknowledged messages an unordered group may have across all its consumers (a
    key-ordered group has 1, see README)."""
    fetch_expires: float = 5.0
    """How long one pull request waits on the server for messages."""

    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError("replicas", f"must be >= 1, got {self.replicas}")
        for name in ("connect_timeout", "request_timeout", "ack_wait", "fetch_expires"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be > 0 seconds, got {getattr(self, name)}")
        if self.fetch_expires < 0.1:
            raise ConfigError("fetch_expires", "must be at least 0.1 seconds")
        if self.max_ack_pending < 1:
            raise ConfigError("max_ack_pending", f"must be >= 1, got {self.max_ack_pending}")
        if not self.subject_prefix or not all(_is_token(t) for t in self.subject_prefix.split(".")):
            raise ConfigError(
                "subject_prefix", f"{self.subject_prefix!r} is not a dotted list of subject tokens"
            )
        if self.stream_prefix and not _is_token(self.stream_prefix):
            raise ConfigError(
                "stream_prefix", f"{self.stream_prefix!r} may only hold letters, digits, - and _"
            )
        for reserved in ("servers", "user", "password", "token", "connect_timeout"):
            if reserved in self.options:
                raise ConfigError(
                    f"options.{reserved}", "set it through the URL or as a polybus option"
                )

    def __repr__(self) -> str:
        shown = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.repr and f.name != "options"
        }
        body = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"NatsSettings({body}, options={redact_options(self.options)!r})"


def _is_token(text: str) -> bool:
    return bool(text) and all(c.isascii() and (c.isalnum() or c in "-_") for c in text)


def parse(url: str, options: Mapping[str, Any]) -> NatsSettings:
    """``nats://[user:password@|token@]host[:port][,host[:port]...][?option=value...]``
    plus ``options`` (which win over the query) into :class:`NatsSettings`."""
    parsed = parse_url(url)
    if parsed.scheme != "nats":
        raise ConfigError("url", f"expected nats://, got {parsed.scheme}://")
    if parsed.path.strip("/"):
        raise ConfigError("url", f"nats:// URLs take no path, got {parsed.path!r}")
    pairs = parsed.host_port(DEFAULT_PORT) if parsed.hosts else [("127.0.0.1", DEFAULT_PORT)]
    values: dict[str, Any] = {**parsed.query, **options}
    values["servers"] = tuple(f"nats://{host}:{port}" for host, port in pairs)
    if parsed.username and parsed.password is None:
        values.setdefault("token", parsed.username)
    elif parsed.username:
        values.setdefault("user", parsed.username)
        values.setdefault("password", parsed.password)
    return parse_settings(NatsSettings, values, source=" for nats://")


def shown_url(settings: NatsSettings) -> str:
    """The servers as one URL that is safe to show (password and token redacted)."""
    hosts = ",".join(server.removeprefix("nats://") for server in settings.servers)
    if settings.user is not None:
        auth = f"{settings.user}:{settings.password or ''}@"
    elif settings.token is not None:
        # a token is the whole userinfo: give redact() a password slot to hide it in
        auth = f":{settings.token}@"
    else:
        auth = ""
    return redact(f"nats://{auth}{hosts}")

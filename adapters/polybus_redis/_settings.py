"""Typed settings of the ``redis://`` adapter, parsed from the URL and options, and the
redis-py clients built from them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from polybus.errors import ConfigError
from polybus.spi import parse_settings, parse_url, redact, redact_options

__all__ = ["DEFAULT_PORT", "RedisSettings", "client", "parse"]

DEFAULT_PORT = 6379
RESERVED = ("host", "port", "db", "username", "password", "ssl", "socket_timeout")


@dataclass(frozen=True, slots=True)
class RedisSettings:
    """Every knob of the Redis Streams adapter (durations in float seconds).
    ``options`` are passed to :class:`redis.asyncio.Redis` untouched."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    connect_timeout: float = 5.0
    """Seconds :meth:`open` may take to reach the server before BrokerUnavailable."""
    publish_timeout: float = 10.0
    """Seconds a publish (and any other command) may take; the socket timeout."""
    key_prefix: str = "polybus:"
    """Topic ``orders`` is the stream at key ``polybus:orders``."""
    block: float = 2.0
    """Seconds one XREADGROUP blocks waiting for new entries; also how often an idle
    consumer looks for entries to reclaim."""
    claim_idle: float = 30.0
    """The lease: seconds an unsettled entry may stay untouched before any consumer of
    the group reclaims it (XAUTOCLAIM); polybus renews it while a handler works. Also
    the longest nack delay (``max_delay``)."""
    maxlen: int | None = None
    """Approximate stream length kept (XADD MAXLEN ~); none keeps every entry."""
    max_message_size: int = 8 * 1024 * 1024
    max_connections: int = 32
    """Connections of the shared pool (publishes, acks, renewals; each consumer's
    blocking reads have one of their own). More concurrent commands wait for a free
    one (within ``publish_timeout``) instead of failing."""
    require_persistence: bool = False
    """Refuse a server that does not keep an append-only file (and claim ``persistent``
    when its configuration cannot be read)."""
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "publish_timeout", "block", "claim_idle"):
            if not getattr(self, name) > 0:
                raise ConfigError(name, f"must be > 0 seconds, got {getattr(self, name)}")
        if self.block < 0.01:
            raise ConfigError("block", "must be at least 0.01 seconds")
        if self.claim_idle < 1:
            raise ConfigError("claim_idle", "must be at least 1 second")
        if self.max_connections < 1:
            raise ConfigError("max_connections", f"must be >= 1, got {self.max_connections}")
        if self.maxlen is not None and self.maxlen < 1:
            raise ConfigError("maxlen", f"must be >= 1 or none, got {self.maxlen}")
        if not 1 <= self.max_message_size <= 512 * 1024 * 1024:
            raise ConfigError("max_message_size", "must be between 1 byte and 512 MiB")
        for name in RESERVED:
            if name in self.options:
                raise ConfigError(f"options.{name}", "set it through the URL or a polybus option")

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.repr and f.name != "options"
        )
        return f"RedisSettings({shown}, options={redact_options(self.options)!r})"

    @property
    def url(self) -> str:
        """The server as a URL that is safe to show (password redacted)."""
        auth = f"{self.username or ''}:{self.password}@" if self.password else ""
        scheme = "rediss" if self.ssl else "redis"
        return redact(f"{scheme}://{auth}{self.host}:{self.port}/{self.db}")


def parse(url: str, options: Mapping[str, Any]) -> RedisSettings:
    """``redis[s]://[user:password@]host[:port][/db][?option=value...]`` plus
    ``options`` (which win over the query)."""
    parsed = parse_url(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ConfigError("url", f"expected redis:// or rediss://, got {parsed.scheme}://")
    if len(parsed.hosts) > 1:
        raise ConfigError("url", "redis:// takes one host (no cluster or sentinel support)")
    db = parsed.path.strip("/") or "0"
    if not db.isdigit():
        raise ConfigError("url", f"the path must be a database number, got {parsed.path!r}")
    values: dict[str, Any] = {**parsed.query, **options, "db": int(db)}
    if parsed.hosts:
        values["host"], values["port"] = parsed.host_port(DEFAULT_PORT)[0]
    values["ssl"] = parsed.scheme == "rediss"
    values["username"] = parsed.username or None
    values["password"] = parsed.password
    return parse_settings(RedisSettings, values, source=" for redis://")


def client(settings: RedisSettings, *, dedicated: bool = False) -> Redis:
    """A redis-py client. Shared: a blocking pool of ``max_connections`` (redis-py's
    default pool refuses the 101st concurrent command with "Too many connections", as
    a Worker's 256 handlers acking at once do); a command is sent once more on a broken
    connection (a stale pooled one after a server restart), never after a timeout.
    Dedicated (one connection, for a consumer's blocking reads): no retry.

    No socket timeout: redis-py bounds socket writes with ``asyncio.wait_for``, which
    on Python 3.11 loses a cancellation that arrives as the write completes (the
    cancelled task carries on). Every call is bounded by the adapter instead
    (:func:`polybus_redis._errors.bounded`)."""
    s = settings
    kwargs: dict[str, Any] = {
        "host": s.host.strip("[]"),
        "port": s.port,
        "db": s.db,
        "username": s.username,
        "password": s.password,
        "ssl": s.ssl,
        "socket_connect_timeout": s.connect_timeout,
        "socket_timeout": None,
        "retry": Retry(
            NoBackoff(), 0 if dedicated else 1, supported_errors=(RedisConnectionError,)
        ),
        "single_connection_client": dedicated,
        **s.options,
    }
    try:
        # resolves the connection class and its arguments as redis-py does (no I/O)
        plain = Redis(**kwargs)
        if dedicated:
            return plain
        resolved = plain.connection_pool
        pool = BlockingConnectionPool(
            connection_class=resolved.connection_class,
            max_connections=s.max_connections,
            timeout=None,  # every call is bounded by the adapter
            **resolved.connection_kwargs,
        )
        pool.make_connection()  # type: ignore[no-untyped-call]  # accepts the options? no I/O
    except TypeError as exc:
        raise ConfigError("options", f"not accepted by redis.asyncio.Redis: {exc}") from exc
    return Redis.from_pool(pool)

"""Typed settings of the ``sqs://`` adapter, parsed from the URL query and options."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from polybus.errors import ConfigError
from polybus.spi import parse_settings, parse_url, redact, redact_options

MAX_WAIT_TIME_SECONDS = 20
"""SQS long polling accepts 0..20 seconds."""
MAX_VISIBILITY_TIMEOUT = 12 * 3600
"""SQS refuses visibility timeouts above 12 hours (counted from the receive)."""

_PREFIX = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class SQSSettings:
    """``sqs://?region=REGION&endpoint_url=URL&...``; every field can also be an option.

    Credentials are not settings: they come from the standard AWS chain (environment,
    shared files, instance roles), or from ``options`` (``aws_access_key_id``...), and
    never appear in ``repr``, logs or errors.
    """

    region: str | None = None
    """AWS region; None: the standard chain (``AWS_REGION`` / ``AWS_DEFAULT_REGION``)."""
    endpoint_url: str | None = None
    """Another endpoint than AWS: a moto server or LocalStack (``http://host:port``)."""
    connect_timeout: float = 10.0
    """Seconds to reach the endpoint at ``open``, per HTTP connection attempt, and the
    read timeout of every call but a receive (whose read timeout is
    ``wait_time_seconds + connect_timeout``)."""
    publish_timeout: float = 30.0
    """Seconds one publish (all its batches, retries included) may take before it fails
    with a retryable PublishError naming the unconfirmed ids."""
    fifo: bool = False
    """FIFO topics and queues: per-key order (key -> MessageGroupId) and broker
    deduplication (id -> MessageDeduplicationId, 5 minute window)."""
    sns: bool = True
    """False: skip SNS, a topic is one SQS queue read by exactly one group (no fan-out)."""
    visibility_timeout: int = 30
    """Seconds a received message stays invisible (the lease the core renews while the
    message is unsettled)."""
    wait_time_seconds: int = 1
    """Long-poll wait of one receive call; small so that ``close`` is prompt."""
    prefix: str = ""
    """Prepended to every SNS topic and SQS queue name this adapter creates."""
    max_threads: int = 16
    """Threads (and HTTP connections) for the blocking boto3 calls."""
    options: dict[str, Any] = field(default_factory=dict)
    """Native settings passed through untouched: ``boto3`` client arguments
    (``aws_access_key_id``, ``verify``...) and ``botocore.config.Config`` fields."""

    def __post_init__(self) -> None:
        if self.region is not None and not self.region:
            raise ConfigError("region", "must not be empty")
        if self.endpoint_url is not None and "://" not in self.endpoint_url:
            raise ConfigError("endpoint_url", "expected http(s)://host[:port]")
        if not self.connect_timeout > 0:
            raise ConfigError("connect_timeout", "must be > 0")
        if not self.publish_timeout > 0:
            raise ConfigError("publish_timeout", "must be > 0")
        if not 1 <= self.visibility_timeout <= MAX_VISIBILITY_TIMEOUT:
            raise ConfigError("visibility_timeout", f"must be 1..{MAX_VISIBILITY_TIMEOUT} s")
        if not 0 <= self.wait_time_seconds <= MAX_WAIT_TIME_SECONDS:
            raise ConfigError("wait_time_seconds", f"must be 0..{MAX_WAIT_TIME_SECONDS}")
        if len(self.prefix) > 20 or not _PREFIX.fullmatch(self.prefix):
            raise ConfigError("prefix", "at most 20 characters of A-Z a-z 0-9 _ -")
        if self.max_threads < 2:
            raise ConfigError("max_threads", "must be >= 2 (a receive blocks one thread)")

    @property
    def receive_read_timeout(self) -> float:
        """The read timeout of a receive: its long poll plus the margin of any call."""
        return self.wait_time_seconds + self.connect_timeout

    def __repr__(self) -> str:
        endpoint = redact(self.endpoint_url) if self.endpoint_url else None
        return (
            f"SQSSettings(region={self.region!r}, endpoint_url={endpoint!r}, "
            f"fifo={self.fifo}, sns={self.sns}, visibility_timeout={self.visibility_timeout}, "
            f"wait_time_seconds={self.wait_time_seconds}, prefix={self.prefix!r}, "
            f"connect_timeout={self.connect_timeout}, publish_timeout={self.publish_timeout}, "
            f"options={redact_options(self.options)!r})"
        )


def parse(url: str, options: Mapping[str, Any]) -> SQSSettings:
    """Settings from ``sqs://?...`` plus ``options`` (options win). No I/O."""
    parsed = parse_url(url)
    if parsed.scheme != "sqs":
        raise ConfigError("url", f"expected sqs://, got {parsed.scheme}://")
    if parsed.hosts or parsed.path.strip("/") or parsed.username:
        raise ConfigError(
            "url", "sqs:// takes no host or path; use sqs://?region=R&endpoint_url=URL"
        )
    return parse_settings(SQSSettings, {**parsed.query, **options}, source=" for sqs://")

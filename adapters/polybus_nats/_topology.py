"""Names, streams and durable consumers: idempotent creation and conflict detection.

A topic is a limits-retention stream with one subject (so every group, each its own
durable consumer, reads every message: fan-out). A group is a durable pull consumer
with explicit acks, created with deliver policy ``new`` (it receives every message
published after it exists, consumer running or not) and ``max_deliver = -1``
(JetStream never gives up on a message; polybus dead-letters at ``max_deliveries``).
A key-ordered group has ``max_ack_pending = 1``: one message in flight across all of
its consumers (README: "Ordering"). The exact topic and group names, and the group's
ordering, are stored in the descriptions, so a name collision or a change of ordering
is refused instead of silently sharing a stream or consumer.
"""

from __future__ import annotations

from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)

from polybus.errors import ConfigError
from polybus.spi import Ordering, fit_name

from . import _errors
from ._settings import NatsSettings

__all__ = [
    "GroupRef",
    "TopicRef",
    "consumer_info",
    "consumer_label",
    "consumer_name",
    "ensure_consumer",
    "ensure_stream",
    "group_ref",
    "stream_name",
    "subject",
    "topic_ref",
]

NAME_CHARS = "A-Za-z0-9_-"
"""What JetStream stream and consumer names (and polybus's subject tokens) may hold."""
MAX_NAME = 64
"""Longest fitted name (stream names become directory names on the server)."""
STREAM_EXISTS = 10058
"""JetStream: stream name already in use with a different configuration."""


# -- names ------------------------------------------------------------------------------


def _fit(name: str) -> str:
    return fit_name(name, allowed=NAME_CHARS, max_length=MAX_NAME)


def _dotted(topic: str) -> bool:
    """True for a topic of dot-separated valid tokens (``orders.created``): its subject
    keeps the tokens. (An empty token, ``a..b``, is not valid: fit_name hashes it.)"""
    return len(topic) <= MAX_NAME and all(_fit(token) == token for token in topic.split("."))


def stream_name(prefix: str, topic: str) -> str:
    """The stream that stores ``topic``: ``orders.created`` -> ``<prefix>orders_created``;
    a topic that is not dotted valid tokens is fitted with a hash of its exact name."""
    return prefix + _fit(topic.replace(".", "_") if _dotted(topic) else topic)


def subject(prefix: str, topic: str) -> str:
    """The subject ``topic`` is published on (its stream's only subject)."""
    return f"{prefix}.{topic if _dotted(topic) else _fit(topic)}"


def consumer_name(group: str) -> str:
    """The durable pull consumer that is ``group``."""
    return _fit(group)


def topic_description(topic: str) -> str:
    return f"polybus topic {topic!r}"


def group_description(group: str, ordering: Ordering) -> str:
    """``polybus group 'g'`` (unordered, as every earlier version wrote it) or
    ``polybus group 'g' ordered by key``."""
    text = f"polybus group {group!r}"
    return f"{text} ordered by key" if ordering is Ordering.KEY else text


@dataclass(frozen=True, slots=True)
class TopicRef:
    topic: str
    stream: str
    subject: str


@dataclass(frozen=True, slots=True)
class GroupRef:
    topic: TopicRef
    group: str
    consumer: str
    ordering: Ordering = Ordering.NONE

    @property
    def next_subject(self) -> str:
        """The JetStream API subject a pull request for this consumer goes to."""
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.topic.stream}.{self.consumer}"


def topic_ref(settings: NatsSettings, topic: str) -> TopicRef:
    return TopicRef(
        topic,
        stream_name(settings.stream_prefix, topic),
        subject(settings.subject_prefix, topic),
    )


def group_ref(
    settings: NatsSettings, topic: str, group: str, ordering: Ordering = Ordering.NONE
) -> GroupRef:
    return GroupRef(topic_ref(settings, topic), group, consumer_name(group), ordering)


# -- streams ----------------------------------------------------------------------------


def _stream_config(settings: NatsSettings, ref: TopicRef) -> StreamConfig:
    return StreamConfig(
        name=ref.stream,
        description=topic_description(ref.topic),
        subjects=[ref.subject],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE if settings.storage == "file" else StorageType.MEMORY,
        num_replicas=settings.replicas,
        max_age=settings.max_age,
        max_bytes=settings.max_bytes or -1,
        max_msgs=settings.max_msgs or -1,
        duplicate_window=settings.duplicate_window,
        discard=DiscardPolicy.OLD,
    )


async def ensure_stream(js: JetStreamContext, settings: NatsSettings, ref: TopicRef) -> None:
    """Create the topic's stream, or accept an existing one that stores the same topic
    the same way; otherwise raise :class:`ConfigError` naming what differs."""
    wanted = _stream_config(settings, ref)
    what = f"stream {ref.stream!r}"
    try:
        await js.add_stream(wanted)
        return
    except nats.js.errors.APIError as exc:
        if exc.err_code != STREAM_EXISTS:
            raise _errors.topology_error(exc, "topic", what) from exc
    except _errors.NATIVE as exc:
        raise _errors.topology_error(exc, "topic", what) from exc
    # the same name with another configuration: tolerate tuned limits, not a clash
    try:
        info = await js.stream_info(ref.stream)
    except _errors.NATIVE as exc:
        raise _errors.topology_error(exc, "topic", what) from exc
    problems = _stream_conflicts(info, wanted)
    if problems:
        raise ConfigError(
            "topic",
            f"topic {ref.topic!r} maps to existing stream {ref.stream!r}, which conflicts: "
            + "; ".join(problems),
        )


def _stream_conflicts(info: StreamInfo, wanted: StreamConfig) -> list[str]:
    have = info.config
    out = []
    if have.description != wanted.description:
        out.append(f"it belongs to {have.description or 'something other than polybus'!r}")
    if sorted(have.subjects or []) != sorted(wanted.subjects or []):
        out.append(f"subjects are {have.subjects}, expected {wanted.subjects}")
    if have.retention != RetentionPolicy.LIMITS:
        out.append(f"retention is {have.retention}, polybus needs limits (fan-out)")
    if have.storage != wanted.storage:
        out.append(f"storage is {have.storage}, configured {wanted.storage}")
    return out


# -- consumers --------------------------------------------------------------------------


def _consumer_config(settings: NatsSettings, ref: GroupRef) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=ref.consumer,
        description=group_description(ref.group, ref.ordering),
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait,
        max_deliver=-1,
        max_ack_pending=1 if ref.ordering is Ordering.KEY else settings.max_ack_pending,
    )


async def consumer_info(js: JetStreamContext, ref: GroupRef) -> ConsumerInfo | None:
    """The group's consumer, None if it does not exist."""
    try:
        info: ConsumerInfo = await js.consumer_info(ref.topic.stream, ref.consumer)
    except nats.js.errors.NotFoundError:
        return None
    except _errors.NATIVE as exc:
        raise _errors.topology_error(exc, "group", consumer_label(ref)) from exc
    return info


async def ensure_consumer(js: JetStreamContext, settings: NatsSettings, ref: GroupRef) -> None:
    """Create the group's durable pull consumer or check the existing one.

    An existing consumer of the same group with the other ordering raises
    ``ConfigError("ordering")``; one that is not this group's (another name fitted
    alike, a push consumer...) raises ``ConfigError("group")``. An existing group's
    ``max_deliver`` (earlier versions stored a limit) becomes -1, and a key-ordered
    group's ``max_ack_pending`` 1 again.
    """
    info = await consumer_info(js, ref)
    keyed = ref.ordering is Ordering.KEY
    if info is None:
        config = _consumer_config(settings, ref)
    else:
        _check_consumer(info, ref)
        config = info.config
        if config.max_deliver in (None, 0, -1) and (not keyed or config.max_ack_pending == 1):
            return
        config.max_deliver = -1
        if keyed:
            config.max_ack_pending = 1
    try:
        await js.add_consumer(ref.topic.stream, config)  # creates, or updates those two
    except _errors.NATIVE as exc:
        raise _errors.topology_error(exc, "group", consumer_label(ref)) from exc


def consumer_label(ref: GroupRef) -> str:
    return f"consumer {ref.consumer!r} on stream {ref.topic.stream!r}"


def _check_consumer(info: ConsumerInfo, ref: GroupRef) -> None:
    have = info.config
    other = Ordering.NONE if ref.ordering is Ordering.KEY else Ordering.KEY
    if have.description == group_description(ref.group, other):
        raise ConfigError(
            "ordering",
            f"nats: group {ref.group!r} of topic {ref.topic.topic!r} exists with "
            f"ordering={other.value!r} ({consumer_label(ref)}), not "
            f"{ref.ordering.value!r}; a group keeps the ordering it was created with. "
            "Subscribe with "
            f"ordering={other.value!r}, or migrate to a new group name with "
            f"ordering={ref.ordering.value!r} (delete the old consumer once it is drained)",
        )
    problems = []
    if have.description != group_description(ref.group, ref.ordering):
        problems.append(f"it belongs to {have.description or 'something other than polybus'!r}")
    if have.deliver_subject:
        problems.append("it is a push consumer; polybus groups are pull consumers")
    if have.ack_policy != AckPolicy.EXPLICIT:
        problems.append(f"its ack policy is {have.ack_policy}, polybus needs explicit")
    if have.filter_subject and have.filter_subject != ref.topic.subject:
        problems.append(f"it filters {have.filter_subject!r}, not {ref.topic.subject!r}")
    if problems:
        raise ConfigError(
            "group",
            f"group {ref.group!r} maps to existing {consumer_label(ref)}, which conflicts: "
            + "; ".join(problems),
        )

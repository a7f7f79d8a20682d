"""Streams and durable consumers: idempotent creation and conflict detection.

A topic is a limits-retention stream with one subject (so every group, each its own
durable consumer, reads every message: fan-out). A group is a durable pull consumer
with explicit acks, created with deliver policy ``new``: it receives every message
published after it exists, consumer running or not. A group's delivery limit ``N``
(``GroupSettings.max_deliveries``) is stored as ``max_deliver = N + 1``: the consumer
sees delivery ``N + 1`` and dead-letters it itself (see ``_consumer``); JetStream's own
cut-off and its MAX_DELIVERIES advisory only matter when that delivery is not settled.
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

from . import _errors, _naming
from ._settings import NatsSettings

__all__ = ["GroupRef", "TopicRef", "ensure_consumer", "ensure_stream", "group_ref", "topic_ref"]

STREAM_EXISTS = 10058
"""JetStream: stream name already in use with a different configuration."""


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


def topic_ref(settings: NatsSettings, topic: str) -> TopicRef:
    return TopicRef(
        topic,
        _naming.stream_name(settings.stream_prefix, topic),
        _naming.subject(settings.subject_prefix, topic),
    )


def group_ref(settings: NatsSettings, topic: str, group: str) -> GroupRef:
    return GroupRef(topic_ref(settings, topic), group, _naming.consumer_name(group))


def _stream_config(settings: NatsSettings, ref: TopicRef) -> StreamConfig:
    return StreamConfig(
        name=ref.stream,
        description=_naming.description("topic", ref.topic),
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
    try:
        await js.add_stream(wanted)
        return
    except nats.js.errors.APIError as exc:
        if exc.err_code != STREAM_EXISTS:
            raise _errors.topology_error(exc, "topic", f"stream {ref.stream!r}") from exc
    except _errors.NATIVE as exc:
        raise _errors.topology_error(exc, "topic", f"stream {ref.stream!r}") from exc
    # the same name with another configuration: tolerate tuned limits, not a clash
    try:
        info = await js.stream_info(ref.stream)
    except _errors.NATIVE as exc:
        raise _errors.topology_error(exc, "topic", f"stream {ref.stream!r}") from exc
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


async def ensure_consumer(
    js: JetStreamContext, settings: NatsSettings, ref: GroupRef, max_deliveries: int | None
) -> ConsumerInfo:
    """Create the group's durable pull consumer or check the existing one; a given
    ``max_deliveries`` updates the existing delivery limit. Returns the live info."""
    stream = ref.topic.stream
    what = f"consumer {ref.consumer!r} on stream {stream!r}"
    try:
        info: ConsumerInfo | None = await js.consumer_info(stream, ref.consumer)
    except nats.js.errors.NotFoundError:
        info = None
    except _errors.NATIVE as exc:
        raise _errors.topology_error(exc, "group", what) from exc
    wanted_deliver = -1 if max_deliveries is None else max_deliveries + 1
    if info is None:
        config = ConsumerConfig(
            durable_name=ref.consumer,
            description=_naming.description("group", ref.group),
            deliver_policy=DeliverPolicy.NEW,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait,
            max_deliver=wanted_deliver,
            max_ack_pending=settings.max_ack_pending,
        )
    else:
        problems = _consumer_conflicts(info, ref)
        if problems:
            raise ConfigError(
                "group",
                f"group {ref.group!r} maps to existing {what}, which conflicts: "
                + "; ".join(problems),
            )
        if max_deliveries is None or info.config.max_deliver == wanted_deliver:
            return info
        config = info.config
        config.max_deliver = wanted_deliver
    try:
        return await js.add_consumer(stream, config)
    except _errors.NATIVE as exc:
        raise _errors.topology_error(exc, "group", what) from exc


def _consumer_conflicts(info: ConsumerInfo, ref: GroupRef) -> list[str]:
    have = info.config
    out = []
    wanted = _naming.description("group", ref.group)
    if have.description != wanted:
        out.append(f"it belongs to {have.description or 'something other than polybus'!r}")
    if have.deliver_subject:
        out.append("it is a push consumer; polybus groups are pull consumers")
    if have.ack_policy != AckPolicy.EXPLICIT:
        out.append(f"its ack policy is {have.ack_policy}, polybus needs explicit")
    if have.filter_subject and have.filter_subject != ref.topic.subject:
        out.append(f"it filters {have.filter_subject!r}, not {ref.topic.subject!r}")
    return out

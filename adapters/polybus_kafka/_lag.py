"""A group's lag, read without touching the group. Blocking: call from a thread.

Counts come from the AdminClient alone (OffsetFetch of the group's committed offsets,
ListOffsets earliest/latest of the topic); the age from a :class:`Reader`, a plain
consumer with a group id of its own that only ever ``assign``\\ s partitions and reads
one record of each: it never subscribes, never joins the group, never commits. So the
group's members, positions and (in-process) delivery counts stay as they are.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka import Consumer as NativeConsumer
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from polybus.errors import BrokerUnavailable, ConfigError

from ._admin import NO_OFFSET, partitions_of
from ._errors import admin_error
from ._settings import KafkaSettings

log = logging.getLogger("polybus.kafka")

READER_PREFIX = "polybus-lag-"
"""The group id of a reader: ``polybus-lag-<random>``, used by no member and no commit."""


@dataclass(frozen=True, slots=True)
class Backlog:
    """One partition: the group reads it from ``start`` (its committed offset, or the
    low watermark where none is committed or the committed one is gone); ``end`` is
    the partition's end offset (high watermark)."""

    partition: int
    start: int
    end: int

    @property
    def messages(self) -> int:
        return max(0, self.end - self.start)


def backlog(admin: AdminClient, topic: str, group: str, timeout: float) -> list[Backlog]:
    """Where ``group`` stands on each partition of the Kafka topic ``topic``.

    :class:`ConfigError` if the topic does not exist, or the group has no committed
    offset on it and no member assigned one of its partitions (polybus commits a
    group's start offsets when it declares the group, so a declared group has them).
    """
    partitions = partitions_of(admin, topic, timeout)
    if not partitions:
        # None: no such topic; []: partitions without a leader (cannot be read now)
        if partitions is None:
            raise ConfigError("group", f"kafka: no group {group!r}: topic {topic!r} does not exist")
        raise BrokerUnavailable(f"topic {topic!r} has partitions without a leader")
    committed = _committed(admin, topic, group, partitions, timeout)
    if not committed and not _has_members_on(admin, topic, group, timeout):
        raise ConfigError(
            "group",
            f"kafka: no group {group!r} on topic {topic!r} (no committed offset, no member)",
        )
    low = _offsets(admin, topic, partitions, OffsetSpec.earliest(), timeout)  # type: ignore[no-untyped-call]
    high = _offsets(admin, topic, partitions, OffsetSpec.latest(), timeout)  # type: ignore[no-untyped-call]
    # no committed offset (a partition added later): a consumer starts at the low
    # watermark (auto.offset.reset=earliest); one below it (records deleted) likewise
    return [Backlog(p, max(committed.get(p, low[p]), low[p]), high[p]) for p in partitions]


def _committed(
    admin: AdminClient, topic: str, group: str, partitions: list[int], timeout: float
) -> dict[int, int]:
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in partitions])
    try:
        listed = admin.list_consumer_group_offsets([request], request_timeout=timeout)
        found = listed[group].result(timeout)
    except KafkaException as exc:
        raise admin_error(exc, f"read offsets of group {group!r}") from exc
    out = {}
    for tp in found.topic_partitions:
        if tp.error is not None:
            raise admin_error(KafkaException(tp.error), f"read offsets of group {group!r}")
        if tp.offset >= NO_OFFSET:
            out[tp.partition] = tp.offset
    return out


def _has_members_on(admin: AdminClient, topic: str, group: str, timeout: float) -> bool:
    """True if a member of ``group`` is assigned a partition of ``topic`` (a group whose
    start offsets the broker refused to set: its members read from the low watermark
    until their first commit)."""
    try:
        described = admin.describe_consumer_groups([group], request_timeout=timeout)
        info = described[group].result(timeout)
    except KafkaException as exc:
        raise admin_error(exc, f"describe group {group!r}") from exc
    for member in info.members or ():
        assignment = member.assignment
        if assignment is not None and any(
            tp.topic == topic for tp in assignment.topic_partitions or ()
        ):
            return True
    return False


def _offsets(
    admin: AdminClient, topic: str, partitions: list[int], spec: Any, timeout: float
) -> dict[int, int]:
    try:
        futures = admin.list_offsets(
            {TopicPartition(topic, p): spec for p in partitions}, request_timeout=timeout
        )
        return {tp.partition: fut.result(timeout).offset for tp, fut in futures.items()}
    except KafkaException as exc:
        raise admin_error(exc, f"read the offsets of topic {topic!r}") from exc


class Reader:
    """Reads the first record at or after given offsets, for their timestamps.

    One plain consumer, created on first use, with a random group id of its own: it
    only ``assign``\\ s (no subscribe, no group membership) and never commits. Calls are
    serialised (one lag reading at a time per adapter).
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._native: NativeConsumer | None = None
        self._closed = False

    def _consumer(self) -> NativeConsumer:
        if self._native is None:
            conf: dict[str, Any] = {
                "logger": logging.getLogger("polybus.kafka.librdkafka"),
                **self.settings.common("consumer"),
                "group.id": READER_PREFIX + uuid.uuid4().hex,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",  # a record deleted meanwhile: the next one
                "queued.min.messages": 1,  # one record per partition is all it reads
            }
            self._native = NativeConsumer(conf)
        return self._native

    def first_timestamps(
        self, topic: str, starts: dict[int, int], timeout: float
    ) -> dict[int, float]:
        """Partition -> publish time (seconds since the epoch) of the first record at
        or after ``starts[partition]``. A partition with no record there any more (or
        one without a timestamp) is left out. :class:`BrokerUnavailable` if the records
        cannot be read within ``timeout``."""
        if not starts:
            return {}
        with self._lock:
            if self._closed:
                raise BrokerUnavailable("the Kafka adapter is closed")
            consumer = self._consumer()
            deadline = time.monotonic() + timeout
            waiting = dict(starts)
            found: dict[int, float] = {}
            try:
                consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
                while waiting:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise BrokerUnavailable(
                            f"could not read the oldest records of topic {topic!r} "
                            f"(partitions {sorted(waiting)}) within {timeout:g} s"
                        )
                    for rec in consumer.consume(len(waiting), min(left, 0.5)):
                        p = rec.partition()
                        if rec.topic() != topic or p not in waiting:
                            continue
                        err = rec.error()
                        if err is not None:
                            if err.code() == KafkaError._PARTITION_EOF:
                                del waiting[p]  # nothing left to read there
                                continue
                            if err.fatal() or not err.retriable():
                                raise admin_error(KafkaException(err), f"read topic {topic!r}")
                            continue
                        offset = rec.offset()
                        if offset is None or offset < waiting[p]:
                            continue
                        del waiting[p]
                        kind, stamp = rec.timestamp()
                        if kind != TIMESTAMP_NOT_AVAILABLE and stamp >= 0:
                            found[p] = stamp / 1000
            except BaseException as exc:
                self._discard()  # the next reading starts with a fresh consumer
                if isinstance(exc, KafkaException):
                    raise admin_error(exc, f"read topic {topic!r}") from exc
                raise
            try:
                consumer.unassign()
            except KafkaException as exc:
                log.debug("lag reader unassign failed, replaced: %s", exc)
                self._discard()
            return found

    def _discard(self) -> None:
        native, self._native = self._native, None
        if native is not None:
            try:
                native.close()
            except (KafkaException, RuntimeError) as exc:
                log.debug("lag reader close failed: %s", exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._discard()

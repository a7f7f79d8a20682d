"""Topic and group declaration with the AdminClient. Blocking: call from a thread.

Names here are Kafka topic names (already fitted). A group comes into being when
:func:`ensure_group` commits, for every partition the group has no committed offset on,
the partition's current end offset: from then on the group receives every message
published to the topic whether or not a consumer runs.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec  # type: ignore[attr-defined]

from polybus.errors import BrokerUnavailable, ConfigError

from ._errors import admin_error, native_error, unreachable

log = logging.getLogger("polybus.kafka")

NO_OFFSET = 0  # committed offsets below this mean "none committed" (-1001 in librdkafka)


def probe(admin: AdminClient, timeout: float) -> None:
    """Raise :class:`BrokerUnavailable` unless a broker answers within ``timeout``
    (:class:`ConfigError` if it refuses the login)."""
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise unreachable(exc, f"no Kafka broker answered within {timeout:g} s") from exc


def partitions_of(admin: AdminClient, topic: str, timeout: float) -> list[int] | None:
    """The partition ids of ``topic`` once each has a leader; None if it does not exist."""
    try:
        meta = admin.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise admin_error(exc, f"describe topic {topic!r}") from exc
    info = meta.topics.get(topic)
    if info is None or info.error is not None:
        return None
    if not info.partitions or any(p.leader < 0 for p in info.partitions.values()):
        return []
    return sorted(info.partitions)


def ensure_topic(
    admin: AdminClient,
    topic: str,
    *,
    partitions: int,
    replication_factor: int | None,
    strict_partitions: bool,
    timeout: float,
) -> list[int]:
    """Create ``topic`` if missing and wait until its partitions have leaders.

    With ``strict_partitions`` an existing topic with another partition count is a
    :class:`ConfigError`. Returns the partition ids.
    """
    new = NewTopic(topic, partitions, replication_factor or -1)
    try:
        admin.create_topics([new], operation_timeout=timeout)[topic].result(timeout)
        log.info("created topic=%s partitions=%d", topic, partitions)
    except KafkaException as exc:
        err = native_error(exc)
        if err is None or err.code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise admin_error(exc, f"create topic {topic!r}") from exc
    deadline = time.monotonic() + timeout
    while True:
        found = partitions_of(admin, topic, timeout)
        if found:
            break
        if time.monotonic() > deadline:
            raise BrokerUnavailable(f"topic {topic!r} has no leader after {timeout:g} s")
        time.sleep(0.05)  # metadata propagation; polled against the deadline above
    if strict_partitions and len(found) != partitions:
        raise ConfigError(
            "partitions",
            f"topic {topic!r} exists with {len(found)} partitions, the settings ask for "
            f"{partitions} (polybus never repartitions: it would break per-key order)",
        )
    return found


def ensure_group(
    admin: AdminClient, topic: str, group: str, partitions: list[int], timeout: float
) -> None:
    """Commit the end offsets of the partitions ``group`` has no committed offset on."""
    wanted = [TopicPartition(topic, p) for p in partitions]
    request = ConsumerGroupTopicPartitions(group, wanted)
    try:
        listed = admin.list_consumer_group_offsets([request], request_timeout=timeout)
        current = listed[group].result(timeout)
    except KafkaException as exc:
        raise admin_error(exc, f"read offsets of group {group!r}") from exc
    missing = [tp.partition for tp in current.topic_partitions if tp.offset < NO_OFFSET]
    if not missing:
        return
    try:
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        specs = {TopicPartition(topic, p): latest for p in missing}
        ends = {
            tp.partition: fut.result(timeout).offset
            for tp, fut in admin.list_offsets(specs, request_timeout=timeout).items()
        }
    except KafkaException as exc:
        raise admin_error(exc, f"read end offsets of topic {topic!r}") from exc
    start = [TopicPartition(topic, p, ends[p]) for p in missing]
    try:
        altered = admin.alter_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, start)], request_timeout=timeout
        )
        result = altered[group].result(timeout)
    except KafkaException as exc:
        # A group with active members refuses: those members already read from their
        # positions, and auto.offset.reset=earliest loses nothing for the rest.
        log.warning("could not set start offsets topic=%s group=%s: %s", topic, group, exc)
        return
    failed = [tp for tp in result.topic_partitions if tp.error is not None]
    if failed:
        log.warning("start offsets refused topic=%s group=%s: %s", topic, group, failed)
        return
    log.info("created group topic=%s group=%s start=%s", topic, group, ends)


def delete_group(admin: AdminClient, group: str, timeout: float) -> None:
    """Delete consumer group ``group``; one that does not exist is fine. A member that
    is still leaving makes the broker refuse (non-empty group): retried until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        future = admin.delete_consumer_groups([group], request_timeout=timeout)[group]
        try:
            future.result(timeout)
            return
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args else None
            if code == KafkaError.GROUP_ID_NOT_FOUND:
                return
            if code == KafkaError.NON_EMPTY_GROUP and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise admin_error(exc, f"delete group {group!r}") from exc

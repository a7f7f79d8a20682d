"""A group's lag from JetStream, without touching the group.

Two kinds of read-only JetStream API requests: the group's consumer info (counts, ack
floor, delivered position) and stream message gets (``$JS.API.STREAM.MSG.GET``, which
reads the stream, not the consumer): nothing is delivered, acked or counted as a
delivery.
"""

from __future__ import annotations

import time
from datetime import datetime

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo, RawStreamMsg

from polybus.errors import BrokerUnavailable, ConfigError
from polybus.spi import Lag

from . import _errors
from ._topology import GroupRef, consumer_label

__all__ = ["lag"]


async def lag(js: JetStreamContext, ref: GroupRef) -> Lag:
    """``messages`` = ``num_pending`` (not delivered yet) + ``num_ack_pending``
    (delivered, not acked: in flight, buffered by a consumer, or NAKed and waiting to
    come again); ``oldest_age`` = seconds since the stream stored the group's oldest
    unsettled message. :class:`ConfigError` if the stream or the consumer is missing."""
    for _ in range(2):  # the second time only if the group moved on between two reads
        info = await _info(js, ref)
        messages = (info.num_pending or 0) + (info.num_ack_pending or 0)
        if messages == 0:
            return Lag(0, None)
        oldest = await _oldest(js, ref, info)
        if oldest is not None:
            return Lag(messages, max(0.0, time.time() - oldest.timestamp()))
    return Lag(messages, None)


async def _info(js: JetStreamContext, ref: GroupRef) -> ConsumerInfo:
    try:
        info: ConsumerInfo = await js.consumer_info(ref.topic.stream, ref.consumer)
    except nats.js.errors.NotFoundError as exc:
        raise ConfigError(
            "group",
            f"nats: no group {ref.group!r} on topic {ref.topic.topic!r} "
            f"({consumer_label(ref)}: {_errors.describe(exc)})",
        ) from exc
    except _errors.NATIVE as exc:
        raise BrokerUnavailable(
            f"NATS: reading the lag of {consumer_label(ref)} failed: {_errors.describe(exc)}"
        ) from exc
    return info


async def _oldest(js: JetStreamContext, ref: GroupRef, info: ConsumerInfo) -> datetime | None:
    """When the stream stored the group's oldest unsettled message; None if that
    message is gone (deleted, or removed by the stream's limits) meanwhile."""
    delivered = info.delivered.stream_seq if info.delivered else 0
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    if not info.num_ack_pending:
        # nothing delivered is unsettled: the oldest is the first not delivered yet
        return _time(await _first_from(js, ref, delivered + 1))
    # the ack floor is the last message of an unbroken run of acked ones from the
    # group's start: the next message in the stream is delivered and not acked
    found = await _first_from(js, ref, floor + 1)
    started = info.created
    if (
        found is None
        or found.time is None
        or started is None
        or info.ack_floor is None
        or info.ack_floor.consumer_seq
        or found.time >= started
    ):
        return _time(found)
    # Until a group's first delivery is acked, nats-server 2.9 reports an ack floor of
    # 0, not the stream position the group started at (deliver policy "new"): what the
    # stream held before the group existed is not the group's. Its oldest unsettled
    # message is then its first one: the first stored after the group was created.
    return _time(await _first_stored_since(js, ref, found.seq or floor + 1, delivered, started))


async def _first_stored_since(
    js: JetStreamContext, ref: GroupRef, low: int, high: int, since: datetime
) -> RawStreamMsg | None:
    """The first message in stream sequences ``low..high`` stored at or after ``since``
    (a binary search: stream times follow stream order)."""
    best: RawStreamMsg | None = None
    while low <= high:
        mid = (low + high) // 2
        found = await _first_from(js, ref, mid)
        if found is None or found.seq is None or found.seq > high:
            high = mid - 1  # nothing between mid and high any more
            continue
        if found.time is not None and found.time >= since:
            best, high = found, mid - 1
        else:
            low = found.seq + 1
    return best


async def _first_from(js: JetStreamContext, ref: GroupRef, seq: int) -> RawStreamMsg | None:
    """The first message of the topic's subject at stream sequence ``seq`` or later
    (skipping deleted ones); None if there is none."""
    try:
        msg: RawStreamMsg = await js.get_msg(
            ref.topic.stream, max(1, seq), subject=ref.topic.subject, next=True
        )
    except nats.js.errors.NotFoundError:
        return None
    except _errors.NATIVE as exc:
        raise BrokerUnavailable(
            f"NATS: reading stream {ref.topic.stream!r} for the lag of "
            f"{consumer_label(ref)} failed: {_errors.describe(exc)}"
        ) from exc
    return msg


def _time(msg: RawStreamMsg | None) -> datetime | None:
    return None if msg is None else msg.time

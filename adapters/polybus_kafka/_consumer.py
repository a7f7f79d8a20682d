"""The Kafka consumer: one confluent-kafka Consumer driven by a dedicated thread.

Thread model: only the fetch thread touches the native consumer (poll, seek, pause,
resume, commit, and the rebalance callbacks librdkafka runs inside poll). The event
loop only touches :class:`~._state.ConsumerState` under its lock, and is woken with
``call_soon_threadsafe`` when records arrive. Nothing here blocks the event loop.

Settlement: acks and nacks change the per-partition ledgers; the thread commits every
position that moved once per loop turn (asynchronously), synchronously for revoked
partitions and at close. A nack makes the thread seek the partition back to the
nacked offset; ``nack(delay=d)`` also pauses that partition for ``d`` seconds.

Backpressure: at most ``max_in_flight`` records wait in the buffer. When it is full
the thread stops taking records out of librdkafka, whose own prefetch (bounded by
``queued.max.messages.kbytes``) keeps them until there is room again. Pausing is
avoided as long as possible because librdkafka drops a paused partition's prefetched
records (they are fetched again on resume). It is needed only to serve the consumer
queue without taking records: rebalance callbacks and ``max.poll.interval.ms`` are
served only by polling. So if the buffer stays full for ``pause_after`` seconds (at
most half of ``max.poll.interval.ms``), the thread pauses every assigned partition,
keeps polling, and resumes when the application frees room; a resumed partition is
fetched again from the position after the last record taken, and the ledger skips
any offset already in flight or acked, so nothing is lost or handed out twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer as NativeConsumer
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from polybus._message import Message
from polybus.errors import BrokerUnavailable, SettlementError
from polybus.spi import Consumer

from ._errors import admin_error
from ._settings import KafkaSettings
from ._state import ConsumerState

log = logging.getLogger("polybus.kafka")

_QUIET_ERRORS = frozenset({KafkaError._PARTITION_EOF})


def consumer_config(settings: KafkaSettings, group: str) -> dict[str, Any]:
    """librdkafka settings of a polybus consumer: defaults, then the user's options,
    then what polybus must own (group, manual commits)."""
    return {
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "cooperative-sticky",
        "logger": logging.getLogger("polybus.kafka.librdkafka"),
        **settings.common("consumer"),
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
    }


def pause_grace(settings: KafkaSettings) -> float:
    """Seconds a full buffer may stop polling before the partitions are paused:
    ``pause_after``, but at most half of ``max.poll.interval.ms`` (librdkafka leaves the
    group when it is not polled for that long)."""
    raw = settings.options.get("max.poll.interval.ms")
    try:
        limit = float(raw) / 2000 if raw is not None else settings.pause_after
    except (TypeError, ValueError):
        limit = settings.pause_after  # librdkafka itself refuses the bad value at open
    return min(settings.pause_after, limit)


class KafkaConsumer(Consumer):
    """Consumer of ``group`` on ``topic``; see the module docstring for the design."""

    def __init__(self, settings: KafkaSettings, topic: str, group: str, max_in_flight: int):
        self.settings = settings
        self.topic = topic
        self.group = group
        self.state = ConsumerState(topic, group, max_in_flight)
        self._native: NativeConsumer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: BaseException | None = None
        self._assigned: set[int] = set()
        self._paused: set[int] = set()
        self._full_since: float | None = None
        self._pause_after = pause_grace(settings)
        self._closed = False

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        conf = consumer_config(self.settings, self.group)
        conf["on_commit"] = self._on_commit
        try:
            native = NativeConsumer(conf)
            native.subscribe(
                [self.topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        except KafkaException as exc:
            raise admin_error(exc, f"subscribe to topic {self.topic!r}") from exc
        self._native = native
        self._thread = threading.Thread(
            target=self._run, name=f"polybus-kafka-{self.topic}-{self.group}", daemon=True
        )
        self._thread.start()

    @property
    def assignment(self) -> frozenset[int]:
        """The partitions of the topic assigned to this consumer now (changes with every
        rebalance; for tests and diagnostics)."""
        return self.state.partitions()

    async def fetch(self, max_messages: int) -> Sequence[Message]:
        while True:
            if self._closed:
                raise SettlementError("consumer is closed")
            if self._failure is not None:
                raise BrokerUnavailable(
                    f"consumer of topic {self.topic!r} group {self.group!r} stopped: "
                    f"{self._failure}"
                ) from self._failure
            self._wake.clear()
            out = self.state.take(max_messages, time.monotonic())
            if out:
                self._kick.set()
                return out
            await self._wake.wait()

    async def ack(self, message: Message) -> None:
        state = self.state
        state.acked.append(message.receipt)  # applied under the lock by the next taker
        if state.holding:
            self._wake.set()  # a record held back behind this key may be free now

    async def ack_many(self, messages: Sequence[Message]) -> None:
        state = self.state
        state.acked.extend([m.receipt for m in messages])
        if state.holding:
            self._wake.set()

    async def nack(self, message: Message, delay: float | None) -> None:
        if self.state.nack(message.receipt, delay):
            self._kick.set()
        else:
            log.debug(
                "nack ignored (partition revoked) topic=%s group=%s id=%s",
                self.topic,
                self.group,
                message.id,
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._kick.set()
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    # -- fetch thread ---------------------------------------------------------------

    def _run(self) -> None:
        native = self._native
        assert native is not None
        try:
            while not self._stop.is_set():
                self._step(native)
        except BaseException as exc:  # surfaced to fetch(); the thread must not die silently
            log.error("consumer stopped topic=%s group=%s: %s", self.topic, self.group, exc)
            self._failure = exc
        finally:
            self._finish(native)
            self._notify()

    def _step(self, native: NativeConsumer) -> None:
        now = time.monotonic()
        actions = self.state.actions(now)
        room = self.state.room()
        if room > 0:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = now
        stalled = self._full_since is not None and now - self._full_since >= self._pause_after
        wanted = set(self._assigned) if stalled else actions.delayed & self._assigned
        self._apply_pauses(native, wanted)
        for partition, offset in actions.seeks:
            self._seek(native, partition, offset)
        if actions.commits:
            self._commit(native, actions.commits, asynchronous=True)
        if room <= 0 and not stalled:
            self._kick.wait(self.settings.poll_interval)
            self._kick.clear()
            return
        # consume(n, timeout) waits until n records or the timeout: wait for the first
        # record only, then take whatever else is already there without waiting
        records = native.consume(1, self.settings.poll_interval)
        if records and room > 1:
            records.extend(native.consume(room - 1, 0))
        good = []
        for rec in records:
            err = rec.error()
            if err is None:
                good.append(rec)
            elif err.fatal():
                raise KafkaException(err)
            elif err.code() not in _QUIET_ERRORS:
                log.warning(
                    "consumer error topic=%s group=%s: %s", self.topic, self.group, err.str()
                )
        if good and self.state.add(good):
            self._notify()

    def _apply_pauses(self, native: NativeConsumer, wanted: set[int]) -> None:
        pause = wanted - self._paused
        resume = self._paused - wanted
        if pause:
            native.pause([TopicPartition(self.topic, p) for p in sorted(pause)])
        if resume:
            native.resume([TopicPartition(self.topic, p) for p in sorted(resume)])
        self._paused = set(wanted)

    def _seek(self, native: NativeConsumer, partition: int, offset: int) -> None:
        try:
            native.seek(TopicPartition(self.topic, partition, offset))
        except KafkaException as exc:
            # the partition is no longer ours or not fetching yet: the uncommitted offset
            # comes back from the committed position either way
            log.warning(
                "seek failed topic=%s group=%s partition=%d offset=%d: %s",
                self.topic,
                self.group,
                partition,
                offset,
                exc,
            )

    def _commit(
        self, native: NativeConsumer, commits: list[tuple[int, int]], *, asynchronous: bool
    ) -> None:
        offsets = [TopicPartition(self.topic, p, pos) for p, pos in commits]
        self.state.committed(commits)
        try:
            if asynchronous:
                native.commit(offsets=offsets, asynchronous=True)
            else:
                native.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self.state.commit_failed([p for p, _ in commits])
            log.warning("commit failed topic=%s group=%s: %s", self.topic, self.group, exc)

    def _finish(self, native: NativeConsumer) -> None:
        try:
            final = self.state.positions()
            if final:
                self._commit(native, final, asynchronous=False)
        finally:
            try:
                native.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("close failed topic=%s group=%s: %s", self.topic, self.group, exc)

    def _notify(self) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(self._wake.set)

    # -- rebalance callbacks (run in the fetch thread, inside consume) ------------

    def _on_assign(self, native: NativeConsumer, partitions: list[TopicPartition]) -> None:
        mine = [tp.partition for tp in partitions if tp.topic == self.topic]
        self.state.assigned(mine)
        self._assigned.update(mine)
        log.info("assigned topic=%s group=%s partitions=%s", self.topic, self.group, mine)

    def _on_revoke(self, native: NativeConsumer, partitions: list[TopicPartition]) -> None:
        mine = [tp.partition for tp in partitions if tp.topic == self.topic]
        commits = self.state.revoked(mine)
        if commits:
            self._commit(native, commits, asynchronous=False)
        self._forget(mine)
        log.info("revoked topic=%s group=%s partitions=%s", self.topic, self.group, mine)

    def _on_lost(self, native: NativeConsumer, partitions: list[TopicPartition]) -> None:
        mine = [tp.partition for tp in partitions if tp.topic == self.topic]
        self.state.revoked(mine)  # lost: another member may own them already, commit nothing
        self._forget(mine)
        log.warning("lost topic=%s group=%s partitions=%s", self.topic, self.group, mine)

    def _forget(self, partitions: list[int]) -> None:
        self._assigned.difference_update(partitions)
        self._paused.difference_update(partitions)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is None:
            return
        self.state.commit_failed([tp.partition for tp in partitions])
        log.warning("commit failed topic=%s group=%s: %s", self.topic, self.group, err.str())

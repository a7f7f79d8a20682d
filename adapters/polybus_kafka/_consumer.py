"""The Kafka consumer: one confluent-kafka Consumer driven by a dedicated thread.

Only the fetch thread touches the native consumer (poll, seek, pause, resume, commit,
and the rebalance callbacks librdkafka runs inside poll); the event loop only touches
the shared :class:`~._state.ConsumerState` and is woken with ``call_soon_threadsafe``.
Nothing here blocks the event loop. README.md ("Consumer") explains the design.
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

from polybus.errors import BrokerUnavailable, SettlementError
from polybus.spi import Consumer, GroupSpec, Message

from ._errors import admin_error
from ._records import Decoder, kafka_topic
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


def poll_bound(settings: KafkaSettings, wanted: float) -> float:
    """``wanted`` seconds, but at most half of ``max.poll.interval.ms``: librdkafka
    leaves the group when it is not polled for that long, and the fetch thread does not
    poll while its buffer is full or while it waits for a revoked partition."""
    raw = settings.options.get("max.poll.interval.ms")
    try:
        limit = float(raw) / 2000 if raw is not None else wanted
    except (TypeError, ValueError):
        limit = wanted  # librdkafka itself refuses the bad value at open
    return min(wanted, limit)


def pause_grace(settings: KafkaSettings) -> float:
    """Seconds a full buffer may stop polling before the partitions are paused."""
    return poll_bound(settings, settings.pause_after)


class KafkaConsumer(Consumer):
    """A consumer of one group (``spec``) on the Kafka topic of its polybus topic.

    ``receive`` hands out buffered records in offset order per partition, ``ack``
    queues receipts, ``nack`` rewinds the partition (pausing it for a delay), ``close``
    commits what is settled and leaves the group. Commits never pass an unsettled
    offset. Keys are not gated here: in a key-ordered group the core hands out one
    message per key (``exclusive_keys`` is False).
    """

    def __init__(self, settings: KafkaSettings, spec: GroupSpec, max_in_flight: int) -> None:
        self.settings = settings
        self.spec = spec
        self.native_topic = kafka_topic(spec.topic)
        self.state = ConsumerState(Decoder(spec.topic, spec.group), max_in_flight)
        self._where = f"topic={spec.topic} group={spec.group}"
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
        self._revoke_timeout = poll_bound(settings, settings.revoke_timeout)
        self._draining = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<KafkaConsumer {self._where} kafka_topic={self.native_topic}>"

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        conf = consumer_config(self.settings, self.spec.group)
        conf["on_commit"] = self._on_commit
        try:
            native = NativeConsumer(conf)
            native.subscribe(
                [self.native_topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        except KafkaException as exc:
            raise admin_error(exc, f"subscribe to topic {self.spec.topic!r}") from exc
        self._native = native
        self._thread = threading.Thread(
            target=self._run, name=f"polybus-kafka-{self.native_topic}", daemon=True
        )
        self._thread.start()

    @property
    def assignment(self) -> frozenset[int]:
        """The partitions assigned to this consumer now (changes with every rebalance;
        for tests and diagnostics)."""
        return self.state.partitions()

    @property
    def draining(self) -> bool:
        """True while a rebalance waits for this consumer's unsettled messages of the
        partitions it gives up (for tests and diagnostics)."""
        return self._draining

    async def receive(self, max_messages: int) -> Sequence[Message]:
        """1 to ``max_messages`` messages; :class:`BrokerUnavailable` once the native
        consumer stopped for good (a fatal client error). Cancelling it loses nothing:
        records are taken from the buffer only when they are returned."""
        state = self.state
        wake = self._wake
        while True:
            if self._closed:
                raise SettlementError(f"the Kafka consumer of {self._where} is closed")
            if self._failure is not None:
                raise BrokerUnavailable(
                    f"the Kafka consumer of {self._where} stopped: {self._failure}"
                ) from self._failure
            wake.clear()
            out = state.take(max_messages, time.monotonic())
            if out:
                self._kick.set()  # room in the buffer again
                return out
            await wake.wait()

    def poll(self, max_messages: int) -> Sequence[Message]:
        """What the fetch thread buffered already (the core's fast path)."""
        if self._closed or self._failure is not None:
            return ()  # receive says why
        out = self.state.take(max_messages, time.monotonic())
        if out:
            self._kick.set()
        return out

    async def ack(self, messages: Sequence[Message]) -> None:
        """Queue the receipts; the ledgers apply them before any commit is computed."""
        if len(messages) == 1:  # the core acks one message at a time: the hot path
            self.state.acked.append(messages[0].receipt)
        else:
            self.state.acked.extend([m.receipt for m in messages])
        if self._draining:
            self._kick.set()  # a revoked partition may be settled now

    async def nack(self, message: Message, delay: float | None) -> None:
        """Rewind the message's partition to it (paused for ``delay``); a message of a
        partition revoked meanwhile comes back from its next owner."""
        if self.state.nack(message.receipt, delay):
            self._kick.set()
        else:
            log.debug("nack ignored (partition revoked) %s id=%s", self._where, message.id)

    async def close(self) -> None:
        """Commit the settled positions and leave the group; the unsettled messages are
        delivered again to the group. Idempotent."""
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
        except BaseException as exc:  # surfaced by receive(); the thread must not die silently
            log.error("consumer stopped %s: %s", self._where, exc)
            self._failure = exc
        finally:
            self._stop.set()  # no waiting for revoked partitions from here on
            self._finish(native)
            self._notify()

    def _step(self, native: NativeConsumer) -> None:
        now = time.monotonic()
        state = self.state
        actions = state.actions(now)
        room = state.room()
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
                log.warning("consumer error %s: %s", self._where, err.str())
        if good and state.add(good):
            self._notify()

    def _apply_pauses(self, native: NativeConsumer, wanted: set[int]) -> None:
        pause = wanted - self._paused
        resume = self._paused - wanted
        if pause:
            native.pause([TopicPartition(self.native_topic, p) for p in sorted(pause)])
        if resume:
            native.resume([TopicPartition(self.native_topic, p) for p in sorted(resume)])
        self._paused = set(wanted)

    def _seek(self, native: NativeConsumer, partition: int, offset: int) -> None:
        try:
            native.seek(TopicPartition(self.native_topic, partition, offset))
        except KafkaException as exc:
            # the partition is no longer ours or not fetching yet: the uncommitted offset
            # comes back from the committed position either way
            log.warning(
                "seek failed %s partition=%d offset=%d: %s", self._where, partition, offset, exc
            )

    def _commit(
        self, native: NativeConsumer, commits: list[tuple[int, int]], *, asynchronous: bool
    ) -> None:
        offsets = [TopicPartition(self.native_topic, p, pos) for p, pos in commits]
        self.state.committed(commits)
        try:
            if asynchronous:  # two calls: the stubs type each mode separately
                native.commit(offsets=offsets, asynchronous=True)
            else:
                native.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self.state.commit_failed([p for p, _ in commits])
            log.warning("commit failed %s: %s", self._where, exc)

    def _finish(self, native: NativeConsumer) -> None:
        try:
            final = self.state.positions()
            if final:
                self._commit(native, final, asynchronous=False)
        finally:
            try:
                native.close()
            except (KafkaException, RuntimeError) as exc:
                log.warning("close failed %s: %s", self._where, exc)

    def _notify(self) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(self._wake.set)

    # -- rebalance callbacks (run in the fetch thread, inside consume or close) -------

    def _mine(self, partitions: list[TopicPartition]) -> list[int]:
        return [tp.partition for tp in partitions if tp.topic == self.native_topic]

    def _on_assign(self, native: NativeConsumer, partitions: list[TopicPartition]) -> None:
        mine = self._mine(partitions)
        self.state.assigned(mine)
        self._assigned.update(mine)
        log.info("assigned %s partitions=%s", self._where, mine)

    def _on_revoke(self, native: NativeConsumer, partitions: list[TopicPartition]) -> None:
        mine = self._mine(partitions)
        self.state.revoking(mine)
        self._drain(mine)
        commits = self.state.revoked(mine)
        if commits:
            self._commit(native, commits, asynchronous=False)
        self._forget(mine)
        log.info("revoked %s partitions=%s", self._where, mine)

    def _drain(self, partitions: list[int]) -> None:
        """Wait, at most ``revoke_timeout``, until the handed-out messages of the revoked
        ``partitions`` are settled, so their next owner starts after them: no message is
        processed twice and, in a key-ordered group, a key's messages do not run on two
        consumers at once. Not when closing: the unsettled messages go back then."""
        deadline = time.monotonic() + self._revoke_timeout
        self._draining = True
        try:
            while not self._stop.is_set():
                left = self.state.unsettled(partitions)
                if not left:
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning(
                        "revoked with %d unsettled messages after %gs (revoke_timeout) %s: "
                        "their next owner delivers them again",
                        left,
                        self._revoke_timeout,
                        self._where,
                    )
                    return
                self._kick.wait(min(remaining, self.settings.poll_interval))
                self._kick.clear()
        finally:
            self._draining = False

    def _on_lost(self, native: NativeConsumer, partitions: list[TopicPartition]) -> None:
        mine = self._mine(partitions)
        self.state.revoked(mine)  # lost: another member may own them already, commit nothing
        self._forget(mine)
        log.warning("lost %s partitions=%s", self._where, mine)

    def _forget(self, partitions: list[int]) -> None:
        self._assigned.difference_update(partitions)
        self._paused.difference_update(partitions)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is None:
            return
        self.state.commit_failed([tp.partition for tp in partitions])
        log.warning("commit failed %s: %s", self._where, err.str())

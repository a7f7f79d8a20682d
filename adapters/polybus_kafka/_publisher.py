"""Publishing through one idempotent confluent-kafka Producer.

``publish`` produces every record of its batch (without blocking), then tells the
producer's delivery thread to send: that thread ``flush``es (librdkafka sends what
lingers at once and serves the delivery reports until its queue is empty) and
otherwise ``poll``s for reports and errors. So a batch leaves as one request rather
than record by record (with ``linger.ms=0`` the first record left alone while Python
produced the rest: 30-40% less throughput for batches of 100 on the test broker),
concurrent publishes share broker round trips, and only one thread ever serves the
reports (a ``flush`` in a worker thread beside a ``poll`` loop waits in 10 ms steps for
reports the other thread took). ``linger.ms`` keeps librdkafka's default (5 ms): it
only bounds how long records wait while a batch is still being produced. Keyed
records are partitioned by librdkafka (murmur2, as the Java client does); keyless
records are spread round-robin over the topic's partitions here, because librdkafka's
sticky partitioner would put a whole batch into one partition (and a group's other
consumers would get none of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from polybus.errors import PublishError
from polybus.spi import Envelope

from ._errors import publish_error
from ._records import Timestamps, record_headers
from ._settings import RECORD_OVERHEAD, KafkaSettings

log = logging.getLogger("polybus.kafka")

ANY_PARTITION = -1
"""librdkafka's RD_KAFKA_PARTITION_UA: the partitioner chooses (by key)."""


def producer_config(settings: KafkaSettings) -> dict[str, Any]:
    return {
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "allow.auto.create.topics": False,
        "message.max.bytes": settings.max_message_size + RECORD_OVERHEAD,
        "logger": logging.getLogger("polybus.kafka.librdkafka"),
        **settings.common("producer"),
    }


class Publisher:
    """The producer of one adapter. ``partitions`` maps a Kafka topic to its partition
    ids (filled by the adapter's declarations); a topic missing there is partitioned by
    librdkafka alone."""

    def __init__(self, settings: KafkaSettings) -> None:
        self.settings = settings
        self.producer = Producer(producer_config(settings))
        self.partitions: dict[str, list[int]] = {}
        self._turn: dict[str, int] = {}
        """Kafka topic -> the round-robin position of its next keyless record."""
        self._stopping = threading.Event()
        self._send = threading.Event()
        """Set after records were produced: the delivery thread flushes them out."""
        self._pump = threading.Thread(
            target=self._serve_reports, name="polybus-kafka-delivery", daemon=True
        )
        self._pump.start()

    def _serve_reports(self) -> None:
        """The one thread that serves delivery reports (librdkafka calls the callbacks
        from inside ``flush`` and ``poll``). Told to send, it flushes: what was produced
        before the flush began, and what is produced while it runs (librdkafka ignores
        the linger while a flush is on), goes out at once."""
        producer = self.producer
        stopping, send = self._stopping, self._send
        timeout = self.settings.publish_timeout
        while not stopping.is_set():
            if send.wait(0.05):
                send.clear()
                producer.flush(timeout)
            else:
                producer.poll(0)

    async def publish(self, topic: str, kafka_topic: str, envelopes: Sequence[Envelope]) -> None:
        """Publish ``envelopes`` to ``kafka_topic`` (``topic`` names it in errors)."""
        producer = self.producer
        reports = _Reports(asyncio.get_running_loop())
        failure: PublishError | None = None
        produce = producer.produce
        report = reports.report
        millis = Timestamps().millis
        spread = self.partitions.get(kafka_topic) or [ANY_PARTITION]
        count = len(spread)
        turn = self._turn.get(kafka_topic, 0)
        sent = 0
        for env in envelopes:
            headers = record_headers(env)
            if env.key is None:
                partition = spread[turn % count]
                turn += 1
            else:
                partition = ANY_PARTITION
            try:
                while True:
                    try:
                        produce(
                            kafka_topic,
                            env.body,
                            env.key,
                            partition=partition,
                            headers=headers,
                            timestamp=millis(env.published_at),
                            on_delivery=partial(report, sent),
                        )
                        break
                    except BufferError:
                        # librdkafka's local queue is full: the delivery thread drains it
                        self._send.set()
                        await asyncio.sleep(0.005)
            except KafkaException as exc:
                failure = publish_error(
                    exc.args[0],
                    topic,
                    failed_ids=tuple(e.id for e in envelopes[sent:]),
                    limit=self.settings.max_message_size,
                    size=env.size,
                )
                failure.__cause__ = exc
                break
            sent += 1
        self._turn[kafka_topic] = turn % count
        if sent:
            self._send.set()
            await self._confirm(reports, sent)
        bad = reports.unconfirmed(sent)
        if bad:
            ids = tuple(envelopes[i].id for i in bad) + (failure.failed_ids if failure else ())
            first = reports.first_error()
            if first is None:
                raise PublishError(
                    f"publish to topic {topic!r} not confirmed within "
                    f"{self.settings.publish_timeout:g} s",
                    retryable=True,
                    failed_ids=ids,
                )
            raise publish_error(first, topic, failed_ids=ids, limit=self.settings.max_message_size)
        if failure is not None:
            raise failure

    async def _confirm(self, reports: _Reports, sent: int) -> None:
        """Wait until the ``sent`` delivery reports of ``reports`` are in (the report
        thread serves them), or the publish timeout."""
        if reports.expect(sent):
            return
        # the future is this batch's alone: awaited bare (a shield would cost another
        # turn of the loop per publish); cancelled by the timeout, it is simply done
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.publish_timeout):
                await reports.future

    async def close(self) -> None:
        """Stop the delivery thread, then flush what is still queued (at most
        ``publish_timeout``)."""
        self._stopping.set()
        self._send.set()
        await asyncio.to_thread(self._pump.join)
        left = await asyncio.to_thread(self.producer.flush, self.settings.publish_timeout)
        if left:
            log.error("closed with %d messages not confirmed by the broker", left)


class _Reports:
    """The delivery reports of one published batch.

    librdkafka calls :meth:`report` from whichever thread serves the producer (the
    flush of this batch or of a concurrent one); ``list.append`` is atomic, so no lock
    is taken per message. The event loop is woken once per batch, by the last report.
    """

    __slots__ = ("_errors", "_expected", "_loop", "_reported", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self._reported: list[int] = []
        self._errors: dict[int, KafkaError] = {}
        self._expected: int | None = None

    def report(self, index: int, err: KafkaError | None, _record: Any) -> None:
        """Delivery callback of message ``index`` (runs in a librdkafka-serving thread)."""
        if err is not None:
            self._errors[index] = err
        self._reported.append(index)
        if len(self._reported) == self._expected:
            with contextlib.suppress(RuntimeError):  # a closed loop: the publisher is gone
                self._loop.call_soon_threadsafe(self._complete)

    def expect(self, count: int) -> bool:
        """Set how many reports the batch waits for; True if all of them are in."""
        self._expected = count
        return len(self._reported) >= count

    def unconfirmed(self, count: int) -> list[int]:
        """Indexes among the first ``count`` without a successful report."""
        if not self._errors and len(self._reported) >= count:
            return []
        reported = set(self._reported)
        return [i for i in range(count) if i not in reported or i in self._errors]

    def first_error(self) -> KafkaError | None:
        return self._errors[min(self._errors)] if self._errors else None

    def _complete(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

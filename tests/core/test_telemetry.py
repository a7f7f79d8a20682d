"""OpenTelemetry on memory://: spans linked through the headers, and the metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import polybus
from polybus.telemetry import Telemetry

from .helpers import WAIT, name


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.telemetry = Telemetry(
            tracer_provider=tracer_provider,
            meter_provider=MeterProvider(metric_readers=[self.reader]),
            depth_interval=0.05,
        )

    def metrics(self) -> dict[str, list[tuple[dict[str, object], float]]]:
        out: dict[str, list[tuple[dict[str, object], float]]] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count  # a histogram: how many recorded
                        out.setdefault(metric.name, []).append((dict(point.attributes), value))
        return out

    def total(self, metric: str) -> float:
        return sum(v for _, v in self.metrics().get(metric, []))


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = Otel()
    yield made
    made.telemetry.close()


async def test_the_consumer_span_continues_the_producers_trace(otel: Otel) -> None:
    topic, done = name(), []
    async with polybus.connect("memory://", telemetry=otel.telemetry) as bus:
        worker = polybus.Worker(bus, handle_signals=False)

        @worker.handler(topic, group="g")
        async def handle(msg: polybus.Message) -> None:
            done.append(msg)

        running = asyncio.create_task(worker.run())
        await worker.wait_ready()
        await bus.publish(topic, b"traced")
        async with asyncio.timeout(WAIT):
            while not done:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await worker.stop()
        await running
    spans = {s.name: s for s in otel.spans.get_finished_spans()}
    producer, consumer = spans[f"publish {topic}"], spans[f"process {topic}"]
    assert producer.kind is SpanKind.PRODUCER
    assert consumer.kind is SpanKind.CONSUMER
    assert consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None
    assert consumer.parent.span_id == producer.context.span_id
    assert "traceparent" in done[0].headers
    assert consumer.attributes["messaging.consumer.group.name"] == "g"
    assert producer.attributes["messaging.system"] == "memory"


async def test_metrics_follow_the_messaging_conventions(otel: Otel) -> None:
    topic, handled = name(), []
    async with polybus.connect("memory://", telemetry=otel.telemetry) as bus:
        chain = polybus.defaults(initial=0.001, max_delay=0.002, max_attempts=2)
        worker = polybus.Worker(bus, chain, handle_signals=False)

        @worker.handler(topic, group="g")
        async def handle(msg: polybus.Message) -> None:
            handled.append(msg.id)
            if msg.body == b"bad":
                raise ConnectionError("flaky dependency")

        running = asyncio.create_task(worker.run())
        await worker.wait_ready()
        await bus.publish_many(topic, [b"ok-1", b"ok-2", b"bad"])
        async with asyncio.timeout(WAIT):
            while otel.total("polybus.dead_lettered") < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            while otel.total("polybus.dead_letter.depth") < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await worker.stop()
        await running
    assert otel.total("messaging.client.sent.messages") == 3 + 1  # the dead-letter copy too
    assert otel.total("messaging.client.consumed.messages") >= 3
    assert otel.total("messaging.process.duration") >= 3
    assert otel.total("messaging.client.operation.duration") >= 2
    assert otel.total("polybus.retries") >= 1
    assert otel.total("polybus.consumer.time_lag") >= 1
    sent = otel.metrics()["messaging.client.sent.messages"]
    assert {attrs["messaging.destination.name"] for attrs, _ in sent} == {
        topic,
        bus.dead_letter_topic(topic, "g"),
    }


async def test_off_by_default_adds_no_header() -> None:
    topic = name()
    async with polybus.connect("memory://") as bus, bus.subscribe(topic, group="g") as sub:
        await bus.publish(topic, b"plain")
        msg = await sub.get(timeout=WAIT)
        await msg.ack()
    assert bus.telemetry is None
    assert msg.headers == {}

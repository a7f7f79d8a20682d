"""Catalogue 18: W3C trace context crosses the broker: the consumer's span continues the
producer's trace (OpenTelemetry, with the SDK's in-memory exporter)."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import polybus
from polybus.telemetry import Telemetry
from polybus_conformance.fixtures import BusFactory, Names, Target
from polybus_conformance.waiting import wait_for

pytestmark = pytest.mark.asyncio


async def test_trace_context_crosses_the_broker(
    polybus_target: Target, polybus_bus_factory: BusFactory, polybus_names: Names
) -> None:
    """18 tracing: a publish span and the Worker's process span of the same message share
    one trace, the process span the child of the publish span"""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(tracer_provider=provider)
    topic, group = polybus_names.topic(), polybus_names.group()
    try:
        producer = await polybus_bus_factory(telemetry=telemetry)
        consumer = await polybus_bus_factory(telemetry=telemetry)
        await producer.declare(topic, group)
        seen: list[polybus.Message] = []
        worker = polybus.Worker(consumer, handle_signals=False)

        @worker.handler(topic, group=group)
        async def handle(msg: polybus.Message) -> None:
            seen.append(msg)

        running = asyncio.create_task(worker.run())
        try:
            await worker.wait_ready()
            await producer.publish(topic, {"order": 7}, headers={"tenant": "acme"})
            await wait_for(
                lambda: bool(seen) or running.done(),
                within=polybus_target.profile.idle_timeout,
                what="the message to be handled",
            )
        finally:
            await worker.stop()
            await running
    finally:
        telemetry.close()
    spans = exporter.get_finished_spans()
    published = [s for s in spans if s.kind is SpanKind.PRODUCER and s.name == f"publish {topic}"]
    processed = [s for s in spans if s.kind is SpanKind.CONSUMER and s.name == f"process {topic}"]
    assert len(published) == 1, [s.name for s in spans]
    assert processed, [s.name for s in spans]
    assert processed[0].context.trace_id == published[0].context.trace_id
    assert processed[0].parent is not None
    assert processed[0].parent.span_id == published[0].context.span_id
    assert seen[0].headers["tenant"] == "acme"

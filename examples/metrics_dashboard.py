"""The order service with OpenTelemetry metrics and traces, exported to the console.

    python examples/metrics_dashboard.py            # memory://, a few seconds of orders
    POLYBUS_URL=nats://127.0.0.1:4222 python examples/metrics_dashboard.py

Swap the console exporters for your collector's (OTLP, Prometheus) in ``telemetry()``;
the instruments polybus records are the same: messaging.client.sent.messages,
messaging.client.consumed.messages, messaging.process.duration, polybus.retries,
polybus.dead_lettered, polybus.consumer.time_lag, polybus.dead_letter.depth...
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from dataclasses import asdict

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import polybus
from polybus.telemetry import Telemetry

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.order_service import Books, Order, make_worker

SECONDS = float(os.environ.get("DASHBOARD_SECONDS", "3"))


def telemetry() -> Telemetry:
    tracer_provider = TracerProvider()
    if os.environ.get("DASHBOARD_TRACES"):
        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=1000)
    return Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=MeterProvider(metric_readers=[reader]),
        depth_interval=1.0,
    )


async def main() -> int:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    books = Books()
    async with polybus.connect(telemetry=telemetry()) as bus:
        worker = make_worker(bus, books, topic)
        running = asyncio.create_task(worker.run())
        await worker.wait_ready()
        orders = [Order(n, "c", "item", 1 if n % 10 else -1, 2.5) for n in range(100)]
        await bus.publish_many(topic, [polybus.Outgoing(asdict(o), key=o.customer) for o in orders])
        await asyncio.sleep(SECONDS)  # let the exporter print a few rounds
        await worker.stop()
        await running
    print(f"shipped {len(books.shipped)} orders, revenue {books.revenue:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    sys.exit(asyncio.run(main()))

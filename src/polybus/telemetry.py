"""OpenTelemetry traces and metrics, optional (``pip install "polybus[otel]"``, which needs
``opentelemetry-api`` only; the SDK and exporters are the application's choice).

Turn it on per bus: ``polybus.connect(url, telemetry=True)`` (the global tracer and meter
providers) or ``telemetry=polybus.telemetry.Telemetry(tracer_provider=..., meter_provider=...)``.
Off (the default) it costs nothing: no span, no header, no instrument is touched.

Traces: a ``publish {topic}`` producer span per publish call (one per batch), whose W3C
trace context travels in each message's headers (``traceparent``, ``tracestate``: plain
headers every backend carries); a ``process {topic}`` consumer span per message a Worker
handles, continuing that trace. Metrics, after the OpenTelemetry messaging semantic
conventions: ``messaging.client.sent.messages``, ``messaging.client.consumed.messages``,
``messaging.client.operation.duration`` (publish), ``messaging.process.duration``; and
polybus's own: ``polybus.retries``, ``polybus.dead_lettered``,
``polybus.duplicates_skipped``, ``polybus.circuit_breaker.open`` (1 while a breaker is
open), ``polybus.consumer.time_lag`` (seconds from publish to receipt) and
``polybus.dead_letter.depth`` (a Worker's groups, every ``depth_interval`` seconds).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from . import _events
from ._message import Envelope, Message, make_envelope
from .errors import ConfigError

__all__ = ["Telemetry"]

SYSTEMS = {"sqs": "aws_sqs", "pubsub": "gcp_pubsub"}
"""polybus backend names whose OpenTelemetry ``messaging.system`` value differs."""


def _api() -> Any:
    try:
        from opentelemetry import metrics, propagate, trace
    except ImportError as exc:
        raise ConfigError(
            "telemetry", "OpenTelemetry is not installed: pip install 'polybus[otel]'"
        ) from exc
    return trace, metrics, propagate


class Telemetry:
    """The tracer, meter and instruments of one or more buses."""

    def __init__(
        self,
        *,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        depth_interval: float = 30.0,
    ) -> None:
        from . import __version__

        trace, metrics, propagate = _api()
        self._trace = trace
        self._propagate = propagate
        self.depth_interval = depth_interval
        self.tracer = trace.get_tracer("polybus", __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter("polybus", __version__, meter_provider=meter_provider)
        self.sent = meter.create_counter(
            "messaging.client.sent.messages", unit="{message}", description="messages sent"
        )
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages", unit="{message}", description="received"
        )
        self.operation_duration = meter.create_histogram(
            "messaging.client.operation.duration", unit="s", description="publish duration"
        )
        self.process_duration = meter.create_histogram(
            "messaging.process.duration", unit="s", description="handler duration"
        )
        self.retries = meter.create_counter("polybus.retries", unit="{retry}")
        self.dead_lettered = meter.create_counter("polybus.dead_lettered", unit="{message}")
        self.duplicates = meter.create_counter("polybus.duplicates_skipped", unit="{message}")
        self.breaker_open = meter.create_up_down_counter("polybus.circuit_breaker.open")
        self.time_lag = meter.create_histogram("polybus.consumer.time_lag", unit="s")
        self.dead_letter_depth = meter.create_up_down_counter(
            "polybus.dead_letter.depth", unit="{message}"
        )
        self._depths: dict[tuple[str, str], int] = {}
        _events.listen(self._on_event)

    def close(self) -> None:
        """Stop listening to polybus's reliability events."""
        _events.unlisten(self._on_event)

    # -- producing ------------------------------------------------------------------

    @contextmanager
    def publishing(
        self, system: str, topic: str, envelopes: Sequence[Envelope]
    ) -> Iterator[list[Envelope]]:
        """A producer span around one publish; yields the envelopes with the span's
        trace context added to their headers."""
        attrs = self._attributes(system, topic)
        attrs["messaging.operation.type"] = "send"
        if len(envelopes) > 1:
            attrs["messaging.batch.message_count"] = len(envelopes)
        started = time.perf_counter()
        kind = self._trace.SpanKind.PRODUCER
        with self.tracer.start_as_current_span(f"publish {topic}", kind=kind, attributes=attrs):
            carrier: dict[str, str] = {}
            self._propagate.inject(carrier)
            stamped = (
                [_with_headers(env, carrier) for env in envelopes] if carrier else list(envelopes)
            )
            outcome: dict[str, Any] = self._attributes(system, topic)
            try:
                yield stamped
            except BaseException as exc:
                outcome["error.type"] = type(exc).__qualname__
                raise
            else:
                self.sent.add(len(envelopes), outcome)
            finally:
                self.operation_duration.record(time.perf_counter() - started, outcome)

    # -- consuming ------------------------------------------------------------------

    def received(self, system: str, topic: str, group: str, count: int, lag: float | None) -> None:
        attrs = self._attributes(system, topic, group)
        self.consumed.add(count, attrs)
        if lag is not None:
            self.time_lag.record(lag, attrs)

    @contextmanager
    def processing(self, system: str, msg: Message) -> Iterator[None]:
        """A consumer span for one handled message, continuing the producer's trace."""
        parent = self._propagate.extract(msg.headers)
        attrs = self._attributes(system, msg.topic, msg.group)
        attrs["messaging.operation.type"] = "process"
        attrs["messaging.message.id"] = msg.id
        attrs["messaging.message.delivery_attempt"] = msg.delivery_attempt  # polybus's own
        outcome = self._attributes(system, msg.topic, msg.group)
        started = time.perf_counter()
        kind = self._trace.SpanKind.CONSUMER
        span_name = f"process {msg.topic}"
        with self.tracer.start_as_current_span(
            span_name, context=parent, kind=kind, attributes=attrs
        ):
            try:
                yield
            except BaseException as exc:
                outcome["error.type"] = type(exc).__qualname__
                raise
            finally:
                self.process_duration.record(time.perf_counter() - started, outcome)

    def record_depth(self, topic: str, group: str, depth: int) -> None:
        """Record the dead letters waiting for ``group`` (an up-down counter's delta)."""
        key = (topic, group)
        delta = depth - self._depths.get(key, 0)
        self._depths[key] = depth
        if delta:
            self.dead_letter_depth.add(
                delta, {"messaging.destination.name": topic, "messaging.consumer.group.name": group}
            )

    # -- reliability events ------------------------------------------------------------

    def _on_event(self, event: str, attributes: Mapping[str, Any]) -> None:
        where = {
            "messaging.destination.name": attributes.get("topic") or "",
            "messaging.consumer.group.name": attributes.get("group") or "",
        }
        if event == "retry":
            self.retries.add(1, {**where, "polybus.retry.where": attributes.get("where", "")})
        elif event == "dead_lettered":
            self.dead_lettered.add(1, where)
        elif event == "duplicate_skipped":
            self.duplicates.add(1, where)
        elif event == "breaker_state":
            state = attributes.get("state")
            if state == "open":
                self.breaker_open.add(1)
            elif state == "closed":
                self.breaker_open.add(-1)

    @staticmethod
    def _attributes(system: str, topic: str, group: str | None = None) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "messaging.system": SYSTEMS.get(system, system),
            "messaging.destination.name": topic,
        }
        if group is not None:
            attrs["messaging.consumer.group.name"] = group
        return attrs


def _with_headers(env: Envelope, extra: Mapping[str, str]) -> Envelope:
    headers = {**env.headers, **extra}
    return make_envelope(env.id, env.body, env.key, headers, env.content_type, env.published_at)


def resolve(telemetry: Telemetry | bool | None) -> Telemetry | None:
    """``connect(telemetry=...)``: True for the global providers, an instance as is."""
    if telemetry is None or telemetry is False:
        return None
    if telemetry is True:
        return Telemetry()
    if isinstance(telemetry, Telemetry):
        return telemetry
    raise ConfigError("telemetry", f"expected True, False or a Telemetry, got {telemetry!r}")

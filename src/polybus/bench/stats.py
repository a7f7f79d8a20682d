"""Benchmark statistics and the report: pure functions, no I/O, no event loop."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) of ``samples``, nearest-rank (no interpolation,
    so a p99 is always a latency that really happened)."""
    if not samples:
        raise ValueError("no samples")
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be within 0..1, got {fraction}")
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class SideResult:
    """What one side (SDK or raw) measured over all rounds."""

    publish_rates: list[float] = field(default_factory=list)
    """Confirmed publishes per second in batches, one figure per round."""
    consume_rates: list[float] = field(default_factory=list)
    """Messages received and acked per second, one figure per round."""
    end_to_end_rates: list[float] = field(default_factory=list)
    """Messages per second of publish time plus consume time, one figure per round."""
    latencies: list[float] = field(default_factory=list)
    """Round-trip seconds (confirmed publish, receive, ack), every sample of every round."""
    single_rates: list[float] = field(default_factory=list)
    """Confirmed publishes per second, one awaited publish at a time, per round."""
    concurrent_rates: list[float] = field(default_factory=list)
    """Confirmed publishes per second with many publishes in flight at once, per round."""

    def summary(self) -> dict[str, float]:
        """Medians of the per-round rates; p50 and p99 of all latency samples (ms)."""
        out: dict[str, float] = {}
        if self.single_rates:
            out["publish_one_per_s"] = statistics.median(self.single_rates)
        if self.concurrent_rates:
            out["publish_concurrent_per_s"] = statistics.median(self.concurrent_rates)
        out |= {
            "publish_per_s": statistics.median(self.publish_rates),
            "consume_ack_per_s": statistics.median(self.consume_rates),
            "end_to_end_per_s": statistics.median(self.end_to_end_rates),
        }
        if self.latencies:
            out["latency_p50_ms"] = percentile(self.latencies, 0.50) * 1000
            out["latency_p99_ms"] = percentile(self.latencies, 0.99) * 1000
        return out


@dataclass(frozen=True, slots=True)
class Report:
    backend: str
    url: str
    """Redacted."""
    messages: int
    rounds: int
    size: int
    batch: int
    sdk: dict[str, float]
    raw: dict[str, float]
    raw_description: str
    sdk_description: str = ""
    singles: int = 0
    concurrency: int = 0

    @property
    def ratios(self) -> dict[str, float]:
        """SDK / raw for every figure. Above 1 is better for rates, worse for latency."""
        return {
            name: (self.sdk[name] / self.raw[name]) if self.raw.get(name) else math.nan
            for name in self.sdk
        }

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ratios": self.ratios}

    def as_text(self) -> str:
        rows = [
            ("publish, one awaited (msg/s)", "publish_one_per_s", "{:,.0f}"),
            (f"publish, {self.concurrency} in flight", "publish_concurrent_per_s", "{:,.0f}"),
            (f"publish, batches of {self.batch}", "publish_per_s", "{:,.0f}"),
            ("consume + ack (msg/s)", "consume_ack_per_s", "{:,.0f}"),
            ("batch publish + consume", "end_to_end_per_s", "{:,.0f}"),
            ("latency p50 (ms)", "latency_p50_ms", "{:,.3f}"),
            ("latency p99 (ms)", "latency_p99_ms", "{:,.3f}"),
        ]
        ratios = self.ratios
        lines = [
            f"polybus bench {self.backend}: {self.url}, {self.messages} messages x "
            f"{self.rounds} rounds, {self.size} B bodies, batch {self.batch}",
            *([f"SDK: {self.sdk_description}"] if self.sdk_description else []),
            f"raw baseline: {self.raw_description}",
            "",
            f"{'':28}{'SDK':>14}{'raw':>14}{'SDK/raw':>10}",
        ]
        for label, name, fmt in rows:
            if name not in self.sdk or name not in self.raw:
                continue
            sdk, raw = fmt.format(self.sdk[name]), fmt.format(self.raw[name])
            lines.append(f"{label:28}{sdk:>14}{raw:>14}{ratios[name]:>10.2f}")
        lines.append("")
        lines.append(
            "rates: confirmed messages per second, median of rounds; latency: percentiles of "
            "all round-trip samples (publish, receive, ack)"
        )
        return "\n".join(lines)

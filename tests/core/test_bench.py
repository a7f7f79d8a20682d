"""The benchmark harness: statistics, the report, and ``polybus bench memory``."""

from __future__ import annotations

import json
import math

import pytest

from polybus import cli
from polybus.bench.harness import Plan
from polybus.bench.stats import Report, SideResult, percentile


def test_percentile_is_nearest_rank() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile(samples, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 0.0) == 1.0
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 0.5)
    with pytest.raises(ValueError, match="fraction"):
        percentile([1.0], 1.5)


def test_summary_takes_medians_of_rounds() -> None:
    side = SideResult(
        [10.0, 30.0, 20.0],
        [1.0, 3.0, 2.0],
        [5.0, 6.0, 7.0],
        [0.001, 0.003],
        single_rates=[4.0, 8.0, 6.0],
        concurrent_rates=[9.0, 7.0, 8.0],
    )
    assert side.summary() == {
        "publish_one_per_s": 6.0,
        "publish_concurrent_per_s": 8.0,
        "publish_per_s": 20.0,
        "consume_ack_per_s": 2.0,
        "end_to_end_per_s": 6.0,
        "latency_p50_ms": 1.0,
        "latency_p99_ms": 3.0,
    }


def test_report_ratios_and_text() -> None:
    report = Report(
        backend="memory",
        url="memory://x",
        messages=10,
        rounds=1,
        size=1024,
        batch=5,
        sdk={"publish_per_s": 50.0, "latency_p50_ms": 2.0},
        raw={"publish_per_s": 100.0, "latency_p50_ms": 0.0},
        raw_description="queue",
    )
    assert report.ratios["publish_per_s"] == 0.5
    assert math.isnan(report.ratios["latency_p50_ms"])  # no division by zero
    text = report.as_text()
    assert "publish, batches of 5" in text
    assert "0.50" in text


@pytest.mark.parametrize("field", ["messages", "rounds", "size", "batch"])
def test_plan_refuses_non_positive_counts(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Plan(**{field: 0})


@pytest.mark.parametrize("field", ["singles", "concurrency", "latency_samples"])
def test_plan_refuses_negative_counts(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Plan(**{field: -1})


def test_bench_memory_runs_both_sides(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "memory", "--messages", "300", "--rounds", "2", "--batch", "50"]
    assert cli.main([*argv, "--latency-samples", "20", "--concurrency", "100", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["backend"], report["messages"], report["rounds"]) == ("memory", 300, 2)
    assert (report["size"], report["batch"]) == (1024, 50)
    assert (report["singles"], report["concurrency"]) == (300, 100)
    assert "Worker" in report["sdk_description"]  # the default consumer
    figures = (
        "publish_one_per_s",
        "publish_concurrent_per_s",
        "publish_per_s",
        "consume_ack_per_s",
        "end_to_end_per_s",
    )
    for side in ("sdk", "raw"):
        for figure in figures:
            assert report[side][figure] > 0
        assert 0 < report[side]["latency_p50_ms"] <= report[side]["latency_p99_ms"]
    assert set(report["ratios"]) == set(report["sdk"])


def test_bench_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "memory", "--messages", "50", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    labels = (
        "publish, one awaited",
        "publish, 500 in flight",
        "publish, batches of 500",
        "consume + ack",
        "latency p50",
        "latency p99",
    )
    for label in labels:
        assert label in out
    assert "SDK/raw" in out


@pytest.mark.parametrize(
    ("api", "described"), [("batch", "get_many + ack_many"), ("each", "Message.ack per message")]
)
def test_bench_other_consume_apis(
    api: str, described: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "memory", "--messages", "300", "--rounds", "1", "--latency-samples", "5"]
    assert cli.main([*argv, "--consume-api", api, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert described in report["sdk_description"]
    assert report["sdk"]["consume_ack_per_s"] > 0


def test_bench_phases_can_be_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["bench", "memory", "--messages", "100", "--rounds", "1", "--latency-samples", "0"]
    assert cli.main([*argv, "--singles", "0", "--concurrency", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "publish_one_per_s" not in report["sdk"]
    assert "publish_concurrent_per_s" not in report["sdk"]
    assert report["sdk"]["publish_per_s"] > 0


def test_bench_needs_a_url_for_a_server_backend(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLYBUS_KAFKA_URL", raising=False)
    assert cli.main(["bench", "kafka"]) == 2
    assert "POLYBUS_KAFKA_URL" in capsys.readouterr().err


def test_bench_unknown_backend_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "carrier-pigeon", "--url", "memory://"]) == 2
    assert "no raw baseline for 'carrier-pigeon'" in capsys.readouterr().err


def test_bench_rejects_bad_counts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["bench", "memory", "--messages", "0"])
    assert "must be >= 1" in capsys.readouterr().err


def test_a_raw_variant_the_backend_lacks_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["bench", "memory", "--raw-variant", "classic"]) == 2
    assert "the memory raw baseline has no variant 'classic' (it has none)" in (
        capsys.readouterr().err
    )
    assert cli.main(["bench", "rabbitmq", "--url", "amqp://h/", "--raw-variant", "stream"]) == 2
    assert "its variants: quorum, classic" in capsys.readouterr().err


def test_the_rabbitmq_raw_variant_picks_the_queue_type() -> None:
    from polybus.bench.cli import load_baseline

    assert getattr(load_baseline("rabbitmq"), "queue_type", None) == "quorum"
    classic = load_baseline("rabbitmq", "classic")
    assert getattr(classic, "queue_type", None) == "classic"
    assert "classic queue" in str(getattr(classic, "description", ""))

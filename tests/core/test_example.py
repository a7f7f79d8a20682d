"""The example programs run on memory:// and say what happened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_order_pipeline_dead_letters_the_poison_order() -> None:
    env = {k: v for k, v in os.environ.items() if k != "POLYBUS_URL"}
    env["ORDER_PIPELINE_DEADLINE"] = "30"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "order_pipeline.py")],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=EXAMPLES,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "backend: memory" in out
    assert out.count("fulfilment: shipped order") == 9
    assert "analytics: 10 orders" in out
    assert "dead letter: order 7" in out
    assert "Reject" in out
    assert "pipeline complete" in out


def test_metrics_dashboard_exports_the_instruments() -> None:
    env = {k: v for k, v in os.environ.items() if k != "POLYBUS_URL"}
    env["DASHBOARD_SECONDS"] = "2"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "metrics_dashboard.py")],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for instrument in (
        "messaging.client.sent.messages",
        "messaging.client.consumed.messages",
        "messaging.process.duration",
        "polybus.dead_lettered",
        "polybus.consumer.time_lag",
        "polybus.dead_letter.depth",
    ):
        assert f'"name": "{instrument}"' in done.stdout, instrument
    assert "shipped 90 orders" in done.stderr

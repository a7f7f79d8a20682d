"""A real SIGTERM to a process running a Worker: in-flight work finishes, nothing is lost."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import WAIT

SCRIPT = Path(__file__).with_name("sigterm_worker.py")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_sigterm_stops_gracefully_and_loses_nothing() -> None:
    total = 100
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(total)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + WAIT * 4  # process start-up included
        seen = 0
        while seen < 3:  # readiness: handlers are running
            line = proc.stdout.readline()
            assert line, f"worker exited early: {proc.stderr.read() if proc.stderr else ''}"
            seen += line.startswith("started ")
            assert time.monotonic() < deadline, "worker never started handling"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=WAIT * 4)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    published, started = set(report["published"]), set(report["started"])
    finished, remaining = set(report["finished"]), set(report["remaining"])
    assert len(published) == total
    assert finished == started  # every handler that started was allowed to finish
    assert 3 <= len(finished) < total  # the signal really interrupted the run
    assert finished | remaining == published  # nothing lost
    assert not finished & remaining  # what was acked is not delivered again

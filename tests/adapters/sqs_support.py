"""Shared helpers of the SQS adapter tests: the broker URL (or a private moto server
started for the session), skip-or-fail when none is available, unique names."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

URL_ENV = "POLYBUS_SQS_URL"


def required() -> bool:
    names = {n.strip() for n in os.environ.get("POLYBUS_REQUIRE", "").split(",")}
    return bool(names & {"all", "sqs"})


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail when ``POLYBUS_REQUIRE`` names sqs."""
    if required():
        pytest.fail(f"{reason}, and POLYBUS_REQUIRE names sqs")
    pytest.skip(reason)


def broker_url() -> Iterator[str]:
    """``POLYBUS_SQS_URL`` if set (credentials from the AWS chain), else a private moto
    server on a free port for the session (dummy credentials, stopped afterwards),
    else skip (or fail) with the reason."""
    given = os.environ.get(URL_ENV)
    if given:
        yield given
        return
    from polybus_conformance.provisioning import StartFailed
    from polybus_conformance.provisioning.moto import MotoLauncher

    launcher = MotoLauncher()
    if launcher.find() is None:
        unavailable(f"{URL_ENV} is not set and {launcher.program} is not installed")
    with tempfile.TemporaryDirectory(prefix="polybus-sqs-") as workdir:
        try:
            broker = launcher.start(Path(workdir))
        except StartFailed as exc:
            unavailable(f"moto_server did not start: {exc}")
            return
        try:
            yield broker.url
        finally:
            broker.stop()


def name(label: str) -> str:
    """A unique topic or group name."""
    return f"t-{label}-{uuid.uuid4().hex[:8]}"


def with_options(url: str, **options: object) -> str:
    """``url`` with extra query options."""
    extra = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"

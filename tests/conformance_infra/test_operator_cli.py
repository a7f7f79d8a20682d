"""The operator commands (publish, tail, dlq, lag), run as subprocesses against
memory:// and a real broker (NATS, the session's)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid

import nats
import pytest

import polybus
from polybus import headers as h
from polybus_conformance import backends
from polybus_conformance.plugin import session_broker
from polybus_conformance.provisioning import Unavailable

WAIT = 30.0


@pytest.fixture
def nats_url(request: pytest.FixtureRequest) -> str:
    try:
        return session_broker(request.config, "nats").url
    except Unavailable as exc:
        if backends.required("nats"):
            pytest.fail(f"nats is required but: {exc}")
        pytest.skip(str(exc).splitlines()[0])


def polybus_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polybus.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def topic() -> str:
    return f"pb-cli-{uuid.uuid4().hex[:8]}"


# -- memory:// ------------------------------------------------------------------------


def test_publish_on_memory_prints_the_id() -> None:
    done = polybus_cli("publish", topic(), "--url", "memory://", stdin='{"a": 1}')
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) == 32


def test_lag_of_a_missing_group_is_a_clear_error_on_memory() -> None:
    done = polybus_cli("lag", topic(), "--group", "nobody", "--url", "memory://")
    assert done.returncode == 1
    assert "no group 'nobody'" in done.stderr
    assert "Traceback" not in done.stderr


def test_dlq_list_on_memory_shows_none() -> None:
    done = polybus_cli("dlq", "list", topic(), "--group", "g", "--url", "memory://")
    assert done.returncode == 0, done.stderr
    assert ": 0" in done.stdout


def test_tail_on_memory_stops_cleanly_on_sigint() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "polybus.cli", "tail", topic(), "--url", "memory://"],
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stderr is not None
            assert "tailing" in child.stderr.readline()
            child.send_signal(signal.SIGINT)
            child.wait(WAIT)
            rest = child.stderr.read()
        finally:
            if child.poll() is None:
                child.kill()
    assert child.returncode == 130
    assert "Traceback" not in rest


def test_passwords_never_show() -> None:
    done = polybus_cli("lag", "t", "--group", "g", "--url", "amqp://u:s3cretpw@127.0.0.1:1/")
    assert done.returncode != 0
    assert "s3cretpw" not in done.stdout + done.stderr


def test_version() -> None:
    done = polybus_cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("polybus ")


# -- a real broker ----------------------------------------------------------------------


async def test_publish_reaches_a_group_with_key_and_headers(nats_url: str) -> None:
    name = topic()
    async with polybus.connect(nats_url) as bus:
        await bus.declare(name, "g")
        done = await asyncio.to_thread(
            polybus_cli,
            "publish",
            name,
            "hello",
            "-k",
            "k1",
            "-H",
            "tenant=acme",
            "--url",
            nats_url,
        )
        assert done.returncode == 0, done.stderr
        async with bus.subscribe(name, group="g") as sub:
            msg = await sub.get(timeout=WAIT)
            await msg.ack()
    assert (msg.id, msg.body, msg.key) == (done.stdout.strip(), b"hello", "k1")
    assert msg.headers == {"tenant": "acme"}


async def test_tail_follows_and_leaves_no_group_behind(nats_url: str) -> None:
    name = topic()
    async with polybus.connect(nats_url) as bus:
        await bus.declare(name)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "polybus.cli",
            "tail",
            name,
            "--count",
            "2",
            "--json",
            "--url",
            nats_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert child.stderr is not None
        assert child.stdout is not None
        async with asyncio.timeout(WAIT):
            assert "tailing" in (await child.stderr.readline()).decode()
        ids = await bus.publish_many(name, [b"one", b"two"])
        async with asyncio.timeout(WAIT):
            lines = (await child.stdout.read()).decode().splitlines()
            assert await child.wait() == 0
    assert [json.loads(line)["id"] for line in lines] == ids
    # the broker's own view: no consumer is left on the topic's stream
    native = await nats.connect(nats_url)
    try:
        consumers = await native.jetstream().consumers_info(f"polybus-{name}")
    finally:
        await native.close()
    assert consumers == [], "the tail's temporary group is still there"


async def test_dlq_list_show_replay_purge_and_lag(nats_url: str) -> None:
    name = topic()
    async with polybus.connect(nats_url) as bus:
        await bus.declare(name, "g")
        ids = await bus.publish_many(name, [b"a", b"b", b"c"])
        async with bus.subscribe(name, group="g") as sub:
            for _ in ids:
                await (await sub.get(timeout=WAIT)).dead_letter("cannot ship")

        def cli(*args: str) -> str:
            done = polybus_cli(*args, "--url", nats_url)
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        listed = await asyncio.to_thread(cli, "dlq", "list", name, "--group", "g")
        assert all(i in listed for i in ids)
        assert "cannot ship" in listed
        shown = await asyncio.to_thread(cli, "dlq", "show", name, ids[0], "--group", "g")
        assert h.DLQ_REASON in shown
        lagged = await asyncio.to_thread(cli, "lag", name, "--group", "g")
        assert " 3 " in lagged, lagged  # the dead letters column
        replayed = await asyncio.to_thread(
            cli, "dlq", "replay", name, "--group", "g", "--id", ids[0]
        )
        assert "replayed 1" in replayed
        async with bus.subscribe(name, group="g") as sub:
            again = await sub.get(timeout=WAIT)
            await again.ack()
        assert again.id == ids[0]
        purged = await asyncio.to_thread(
            cli, "dlq", "purge", name, "--group", "g", "--all", "--yes"
        )
        assert "purged 2" in purged
        assert (await bus.dead_letter_lag(name, "g")).messages == 0
